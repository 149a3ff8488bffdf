// ns per message for the wire codec: decode and encode of representative requests.
#include <vvu/wire/codec.hpp>

#include <benchmark/benchmark.h>

#include <vector>

namespace {

using namespace vvu::wire;

message<front_request::set_mem_table> mem_table_message() {
    message<front_request::set_mem_table> m;
    m.flags |= flags::need_reply;
    m.payload.nregions = 2;
    m.payload.regions[0] = {0, 0xa0000, 0x7f12'0000'0000, 0};
    m.payload.regions[1] = {0x100000, 0x3ff0'0000, 0x7f12'0010'0000, 0x100000};
    m.fds = {20, 21};
    return m;
}

message<front_request::set_vring_addr> vring_addr_message() {
    message<front_request::set_vring_addr> m;
    m.payload = {1, 0, 0x7f00'0000'1000, 0x7f00'0000'3000, 0x7f00'0000'2000, 0};
    return m;
}

message<front_request::set_vring_kick> kick_message() {
    message<front_request::set_vring_kick> m;
    m.payload.value = 1;
    m.fds = {9};
    return m;
}

template <class Msg>
void bm_decode(benchmark::State& state, Msg m) {
    const auto f = encode(m);
    const std::vector<std::byte> bytes(f->bytes().begin(), f->bytes().end());
    const std::vector<int> fds(f->fds.begin(), f->fds.end());
    for (auto _ : state) {
        auto d = decode<front_request>(bytes, fds);
        benchmark::DoNotOptimize(d);
    }
    state.SetItemsProcessed(state.iterations());
}

template <class Msg>
void bm_encode(benchmark::State& state, Msg m) {
    for (auto _ : state) {
        benchmark::DoNotOptimize(m);
        auto f = encode(m);
        benchmark::DoNotOptimize(f);
    }
    state.SetItemsProcessed(state.iterations());
}

} // namespace

BENCHMARK_CAPTURE(bm_decode, GET_FEATURES, message<front_request::get_features>{});
BENCHMARK_CAPTURE(bm_decode, SET_VRING_KICK, kick_message());
BENCHMARK_CAPTURE(bm_decode, SET_VRING_ADDR, vring_addr_message());
BENCHMARK_CAPTURE(bm_decode, SET_MEM_TABLE_2_regions, mem_table_message());
BENCHMARK_CAPTURE(bm_encode, GET_FEATURES, message<front_request::get_features>{});
BENCHMARK_CAPTURE(bm_encode, SET_VRING_KICK, kick_message());
BENCHMARK_CAPTURE(bm_encode, SET_VRING_ADDR, vring_addr_message());
BENCHMARK_CAPTURE(bm_encode, SET_MEM_TABLE_2_regions, mem_table_message());

BENCHMARK_MAIN();
