// The wire layer: vhost-user message format and codec (design.md layer 1).
#pragma once

#include <vvu/wire/codec.hpp>
#include <vvu/wire/error.hpp>
#include <vvu/wire/format.hpp>
#include <vvu/wire/features.hpp>
#include <vvu/wire/header.hpp>
#include <vvu/wire/message.hpp>
#include <vvu/wire/payload.hpp>
#include <vvu/wire/request.hpp>
#include <vvu/wire/transcript.hpp>
