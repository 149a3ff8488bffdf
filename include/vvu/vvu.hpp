// vvu: vhost-user and virtio-vhost-user. The umbrella header includes every layer
// (design.md): wire, ring, memory, transport, protocol, device.
#pragma once

#include <vvu/version.hpp>
#include <vvu/wire/wire.hpp>
#include <vvu/ring/ring.hpp>
#include <vvu/memory/guest_memory.hpp>
#include <vvu/transport/transport.hpp>
#include <vvu/transport/unix_socket.hpp>
#include <vvu/protocol/backend.hpp>
#include <vvu/device/net.hpp>
#include <vvu/device/l2.hpp>
#include <vvu/device/net_port.hpp>
#include <vvu/device/net_forward.hpp>
#include <vvu/protocol/frontend.hpp>
#include <vvu/device/net_driver.hpp>
#include <vvu/device/blk.hpp>
#include <vvu/device/blk_driver.hpp>
