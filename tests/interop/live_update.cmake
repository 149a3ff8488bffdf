# Live update and crash recovery of vvu's back-end (tests/interop/live-update/): a new process
# takes a running vvu-forward's sessions over under traffic from vvu-traffic, DPDK testpmd and
# QEMU guests, and hostile take-over clients are refused while the old process serves on.
# A missing peer makes a test skip (exit 77), or fail when CI=true.
# Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-traffic OR NOT TARGET vvu-forward OR NOT TARGET vvu-device)
  message(STATUS "vvu: interop.live-update.* tests need the vvu-traffic, vvu-forward and vvu-device examples")
  return()
endif()

set(vvu_lu_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/live-update)
set(vvu_lu_tools "--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward>")

# name | script | arguments
set(vvu_lu_tests
  "takeover-echo.split|takeover-echo.sh|${vvu_lu_tools} --ring split --takeovers 20"
  "takeover-echo.packed|takeover-echo.sh|${vvu_lu_tools} --ring packed --takeovers 20"
  # The same through vvu-device: a vvu: port (the vfio-user connection and the virtio driver
  # cross too); vvu-device sees one driver and no disconnect.
  "takeover-echo.vvu.split|takeover-echo.sh|${vvu_lu_tools} --device $<TARGET_FILE:vvu-device> --ring split --takeovers 20"
  "takeover-echo.vvu.packed|takeover-echo.sh|${vvu_lu_tools} --device $<TARGET_FILE:vvu-device> --ring packed --takeovers 20"
  # Prepared take-overs: each new process connects and maps the memory while the old one
  # serves, and starts the outage on SIGUSR2 (vvu-forward --takeover-go sigusr2).
  "takeover-echo.split.prepared|takeover-echo.sh|${vvu_lu_tools} --ring split --takeovers 20 --go signal"
  "takeover-echo.vvu.packed.prepared|takeover-echo.sh|${vvu_lu_tools} --device $<TARGET_FILE:vvu-device> --ring packed --takeovers 20 --go signal"
  # DPDK testpmd's virtio-user (txonly) -> vvu-forward rxonly, 3 take-overs under full load.
  "takeover-testpmd.split|takeover-testpmd.sh|--forward $<TARGET_FILE:vvu-forward> --ring split --takeovers 3"
  "takeover-testpmd.packed|takeover-testpmd.sh|--forward $<TARGET_FILE:vvu-forward> --ring packed --takeovers 3"
  # Two queue pairs on two forwarding threads: each thread's engine state crosses.
  "takeover-testpmd.split.q2.t2|takeover-testpmd.sh|--forward $<TARGET_FILE:vvu-forward> --ring split --takeovers 3 --queues 2 --threads 2"
  # Two QEMU guests ping through vvu-forward --mode learn, 2 take-overs during 40 pings; the
  # guest lives in the build tree, as for interop.qemu.ping (tests/interop/qemu.cmake).
  "takeover-ping|takeover-ping.sh|--forward $<TARGET_FILE:vvu-forward> --guest-dir ${PROJECT_BINARY_DIR}/guest --pings 40 --takeovers 2"
  # Take-overs that must be refused (other ports, no old process, garbage, another version, a
  # client that hangs up halfway) while vvu-traffic echoes: nothing lost, the old one serves on.
  "takeover-refused|takeover-refused.sh|${vvu_lu_tools}"
  # The same refusals by vvu-device --control (the device's own live update).
  "takeover-refused.device|takeover-refused.sh|${vvu_lu_tools} --device $<TARGET_FILE:vvu-device>"
  # Crash recovery: vvu-forward --port unix-client: under testpmd (server=1) killed -9, twice.
  "crash-testpmd.split|crash-testpmd.sh|--backend $<TARGET_FILE:vvu-forward> --ring split"
  "crash-testpmd.packed|crash-testpmd.sh|--backend $<TARGET_FILE:vvu-forward> --ring packed"
  # Crash recovery under two pinging QEMU guests that listen (server=on): vvu-forward
  # --port unix-client: killed -9 and restarted twice during 60 pings; every ping from 2 s
  # after each restart on must be answered, QEMU logs only the back-end's disconnects.
  "crash-qemu|crash-qemu.sh|--forward $<TARGET_FILE:vvu-forward> --guest-dir ${PROJECT_BINARY_DIR}/guest --pings 60 --crashes 2 --grace 2")

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
