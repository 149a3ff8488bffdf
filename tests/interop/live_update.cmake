# Live update and crash recovery of vvu's back-end (tests/interop/live-update/): a new process
# takes a running vvu-forward's sessions over under traffic from vvu-traffic, DPDK testpmd and
# QEMU guests, and hostile take-over clients are refused while the old process serves on.
# A missing peer makes a test skip (exit 77), or fail when CI=true.
# Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-traffic OR NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.live-update.* tests need the vvu-traffic and vvu-forward examples")
  return()
endif()

set(vvu_lu_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/live-update)
set(vvu_lu_tools "--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward>")

# name | script | arguments
set(vvu_lu_tests
  "takeover-echo.split|takeover-echo.sh|${vvu_lu_tools} --ring split --takeovers 20"
  "takeover-echo.packed|takeover-echo.sh|${vvu_lu_tools} --ring packed --takeovers 20")

foreach(spec IN LISTS vvu_lu_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 script)
  list(GET spec 2 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.live-update.${name} COMMAND bash ${vvu_lu_dir}/${script} ${args})
  set_tests_properties(interop.live-update.${name} PROPERTIES
    LABELS "interop"
    TIMEOUT 240
    SKIP_RETURN_CODE 77
    RESOURCE_LOCK vvu_live_peers)
endforeach()
