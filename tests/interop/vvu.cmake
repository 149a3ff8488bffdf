# virtio-vhost-user end to end: real front-ends (DPDK testpmd's virtio-user, vvu-traffic, QEMU)
# connect to vvu-device, and vvu-forward serves them over the PCI-BAR transport (--port vvu:PCI,
# vfio-user to the device's PCI function). The scripts are the UNIX-socket ones with --via /
# --device (tests/interop/dpdk/lib.sh, tests/interop/frontend/echo-forward.sh) plus
# tests/interop/vvu/*.sh. A missing peer makes a test skip (exit 77), or fail when CI=true.
# Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-device OR NOT TARGET vvu-forward OR NOT TARGET vvu-traffic)
  message(STATUS "vvu: interop.vvu.* tests need the vvu-device, vvu-forward and vvu-traffic examples")
  return()
endif()

set(vvu_dpdk_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/dpdk)
set(vvu_vvu_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/vvu)
set(vvu_dev $<TARGET_FILE:vvu-device>)
set(vvu_fwd $<TARGET_FILE:vvu-forward>)

# name | script | arguments
set(vvu_vvu_tests
  "to-backend.split|${vvu_dpdk_dir}/one-way.sh|--backend ${vvu_fwd} --via vvu --device ${vvu_dev} --direction to-backend --ring split"
  "to-backend.packed|${vvu_dpdk_dir}/one-way.sh|--backend ${vvu_fwd} --via vvu --device ${vvu_dev} --direction to-backend --ring packed"
  "from-backend.split|${vvu_dpdk_dir}/one-way.sh|--backend ${vvu_fwd} --via vvu --device ${vvu_dev} --direction from-backend --ring split"
  "from-backend.packed|${vvu_dpdk_dir}/one-way.sh|--backend ${vvu_fwd} --via vvu --device ${vvu_dev} --direction from-backend --ring packed"
  "xconnect.mixed.split|${vvu_dpdk_dir}/xconnect.sh|--backend ${vvu_fwd} --via mixed --device ${vvu_dev} --ring split"
  "xconnect.mixed.packed|${vvu_dpdk_dir}/xconnect.sh|--backend ${vvu_fwd} --via mixed --device ${vvu_dev} --ring packed"
  "echo.split|${CMAKE_CURRENT_SOURCE_DIR}/interop/frontend/echo-forward.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --ring split"
  "echo.packed|${CMAKE_CURRENT_SOURCE_DIR}/interop/frontend/echo-forward.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --ring packed"
  "lifecycle|${vvu_vvu_dir}/lifecycle.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev}"
  "driver-restart|${vvu_vvu_dir}/driver-restart.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev}"
  # The same with a clean exit (SIGTERM) of the old vvu-forward: it leaves the session to vvu-device.
  "driver-restart.clean-exit|${vvu_vvu_dir}/driver-restart.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --stop TERM"
  # Packed rings: vvu-device's own inflight area carries their positions to the next driver.
  "driver-restart.packed|${vvu_vvu_dir}/driver-restart.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --ring packed"
  "driver-restart.clean-exit.packed|${vvu_vvu_dir}/driver-restart.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --stop TERM --ring packed"
  # vvu-device itself handed to a new vvu-device (--takeover), 10 times under traffic.
  "device-takeover.split|${vvu_vvu_dir}/device-takeover.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --ring split"
  "device-takeover.packed|${vvu_vvu_dir}/device-takeover.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward ${vvu_fwd} --device ${vvu_dev} --ring packed")

foreach(spec IN LISTS vvu_vvu_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 script)
  list(GET spec 2 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.vvu.${name} COMMAND bash ${script} ${args})
  set_tests_properties(interop.vvu.${name} PROPERTIES
    LABELS "interop"
    TIMEOUT 180
    SKIP_RETURN_CODE 77
    # Peers busy-poll the two cores: one live peer test at a time.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
