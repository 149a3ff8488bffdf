// Human-readable one-line descriptions of messages, for logs, tracers and vvu-decode:
//   "SET_VRING_ADDR index=0 flags=0x0 desc=0x7f3c… used=… avail=… log=0x0"
#pragma once

#include <vvu/wire/message.hpp>

#include <string>

namespace vvu::wire {

[[nodiscard]] std::string describe(const any_front_message& m);
[[nodiscard]] std::string describe(const any_back_message& m);
[[nodiscard]] std::string describe(const any_reply<front_request>& r);
[[nodiscard]] std::string describe(const any_reply<back_request>& r);

} // namespace vvu::wire
