# Session churn: thousands of vvu-traffic echo sessions in a row against one long-lived
# vvu-forward (unix: port) or one vvu-device + vvu-forward (vvu: port); every frame accounted
# for, and the back-ends' open fds, mappings and RSS flat (tests/interop/churn/churn.sh says
# how). Labels "interop" and "churn"; scripts/test.sh also runs `-L churn` in its ASan tree,
# where VVU_SANITIZE makes the script skip the RSS check (below).
# Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-traffic OR NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.churn.* tests need the vvu-traffic and vvu-forward examples")
  return()
endif()

set(vvu_churn_script ${CMAKE_CURRENT_SOURCE_DIR}/interop/churn/churn.sh)
set(vvu_churn_peers --traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward>)
# Sessions per test: 10 000 on the unix: port (split and packed rings, 5 000 each) and 2 000
# through vvu-device, as the hardening issue asks — in the ASan tree too, where the script
# leaves RSS out (the sanitizer's quarantine keeps freed memory) and a leak at a peer's exit
# fails the test. Measured on the reference 2-core machine: the three take about 3 minutes
# (69 + 71 + 39 s), a session being mostly control-message round trips.
set(vvu_churn_unix_sessions 5000)
set(vvu_churn_device_sessions 2000)
if(VVU_SANITIZE)
  list(APPEND vvu_churn_peers --sanitized)
endif()

# name | arguments
set(vvu_churn_tests
  "unix.split|--topology unix --ring split --sessions ${vvu_churn_unix_sessions}"
  "unix.packed|--topology unix --ring packed --sessions ${vvu_churn_unix_sessions}")
if(TARGET vvu-device)
  list(APPEND vvu_churn_tests
    "vvu-device|--topology vvu-device --device $<TARGET_FILE:vvu-device> --sessions ${vvu_churn_device_sessions}")
endif()

foreach(spec IN LISTS vvu_churn_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.churn.${name} COMMAND bash ${vvu_churn_script} ${vvu_churn_peers} ${args})
  set_tests_properties(interop.churn.${name} PROPERTIES
    LABELS "interop;churn"
    TIMEOUT 600
    SKIP_RETURN_CODE 77
    # vvu-traffic busy-polls a core during each session: one live peer test at a time.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
