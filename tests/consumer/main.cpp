// Encodes a GET_FEATURES request, decodes it back and prints the linked library version.
#include <vvu/vvu.hpp>

#include <cstdio>

int main() {
    using namespace vvu::wire;
    auto frame = encode(message<front_request::get_features>{});
    if (!frame) return 1;
    auto decoded = decode<front_request>(frame->bytes(), {});
    if (!decoded || request_of(*decoded) != front_request::get_features) return 2;
    std::printf("vvu %.*s: GET_FEATURES is %u bytes\n", static_cast<int>(vvu::library_version().size()),
                vvu::library_version().data(), frame->size);
    return 0;
}
