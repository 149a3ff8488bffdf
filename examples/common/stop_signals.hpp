// How an example program ends: SIGINT and SIGTERM (and any `extra` signal) are blocked before
// the program starts a thread, so every thread inherits the mask and only the thread that waits
// for them (sigwait / sigtimedwait) ever takes one — no handler runs inside a data path.
// SIGPIPE is ignored: a peer that goes away mid-write ends its session, not the process.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <initializer_list>

namespace vvu::examples {

inline sigset_t block_stop_signals(std::initializer_list<int> extra = {}) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    for (int s : extra) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    return set;
}

} // namespace vvu::examples
