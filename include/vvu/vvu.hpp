// vvu: vhost-user and virtio-vhost-user. The umbrella header includes every layer.
#pragma once

#include <vvu/version.hpp>
#include <vvu/wire/wire.hpp>
