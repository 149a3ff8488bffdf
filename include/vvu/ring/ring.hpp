// vvu ring layer: split and packed virtqueues, device and driver sides, over a memory policy.
#pragma once

#include "vvu/ring/chain.hpp"
#include "vvu/ring/error.hpp"
#include "vvu/ring/memory_policy.hpp"
#include "vvu/ring/notify.hpp"
#include "vvu/ring/packed.hpp"
#include "vvu/ring/split.hpp"
