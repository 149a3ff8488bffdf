# vvu's front-end against real back-ends: vvu-traffic -> DPDK testpmd net_vhost (both directions,
# split and packed rings), vvu-traffic echo through vvu-forward loopback (and a front-end that
# breaks a ring there beside another's traffic), and vvu-blk against
# qemu-storage-daemon's vhost-user-blk export and
# vvu-blk-server (unix: and vvu: ports). The scripts are in tests/interop/frontend/ (lib.sh
# says how they work). A missing peer makes a test skip (exit 77), or fail when CI=true.
# Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-traffic OR NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.frontend.* tests need the vvu-traffic and vvu-forward examples")
  return()
endif()

set(vvu_fe_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/frontend)

# name | script | arguments
set(vvu_fe_tests
  "dpdk.tx.split|traffic-dpdk.sh|--traffic $<TARGET_FILE:vvu-traffic> --direction tx --ring split"
  "dpdk.tx.packed|traffic-dpdk.sh|--traffic $<TARGET_FILE:vvu-traffic> --direction tx --ring packed"
  "dpdk.rx.split|traffic-dpdk.sh|--traffic $<TARGET_FILE:vvu-traffic> --direction rx --ring split"
  "dpdk.rx.packed|traffic-dpdk.sh|--traffic $<TARGET_FILE:vvu-traffic> --direction rx --ring packed"
  # End to end: testpmd's macswap returns every frame; vvu-traffic checks each one's bytes.
  "dpdk.echo.split|traffic-dpdk.sh|--traffic $<TARGET_FILE:vvu-traffic> --direction echo --ring split"
  "dpdk.echo.packed|traffic-dpdk.sh|--traffic $<TARGET_FILE:vvu-traffic> --direction echo --ring packed"
  "echo.split|echo-forward.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward> --ring split"
  "echo.packed|echo-forward.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward> --ring packed"
  # A front-end breaks a ring beside another's steady traffic: reported once, the rest runs on.
  "broken-ring.split|broken-ring.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward> --ring split"
  "broken-ring.packed|broken-ring.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward> --ring packed")
if(TARGET vvu-device)
  list(APPEND vvu_fe_tests
    "broken-ring.vvu-device.split|broken-ring.sh|--traffic $<TARGET_FILE:vvu-traffic> --forward $<TARGET_FILE:vvu-forward> --ring split --device $<TARGET_FILE:vvu-device>")
endif()
if(TARGET vvu-blk)
  # Split ring only: qemu-storage-daemon (libvhost-user) does not offer VIRTIO_F_RING_PACKED
  # (vvu-blk --packed fails there with "GET_FEATURES: required features 0x400000000 not offered").
  list(APPEND vvu_fe_tests "blk.qsd.split|blk-verify.sh|--blk $<TARGET_FILE:vvu-blk> --server qsd")
  if(TARGET vvu-blk-server)
    # The same checks against vvu's own back-end, on a unix: port and behind vvu-device.
    list(APPEND vvu_fe_tests
      "blk.vvu.split|blk-verify.sh|--blk $<TARGET_FILE:vvu-blk> --server $<TARGET_FILE:vvu-blk-server> --queues 2"
      "blk.vvu.packed|blk-verify.sh|--blk $<TARGET_FILE:vvu-blk> --server $<TARGET_FILE:vvu-blk-server> --packed")
    if(TARGET vvu-device)
      list(APPEND vvu_fe_tests
        "blk.vvu-device.split|blk-verify.sh|--blk $<TARGET_FILE:vvu-blk> --server $<TARGET_FILE:vvu-blk-server> --device $<TARGET_FILE:vvu-device>"
        "blk.vvu-device.packed|blk-verify.sh|--blk $<TARGET_FILE:vvu-blk> --server $<TARGET_FILE:vvu-blk-server> --device $<TARGET_FILE:vvu-device> --packed")
    endif()
  endif()
endif()

foreach(spec IN LISTS vvu_fe_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 script)
  list(GET spec 2 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.frontend.${name} COMMAND bash ${vvu_fe_dir}/${script} ${args})
  set_tests_properties(interop.frontend.${name} PROPERTIES
    LABELS "interop"
    # A run takes 5-15 s; peers start slowly when the two cores are busy.
    TIMEOUT 180
    SKIP_RETURN_CODE 77
    # testpmd and vvu-forward busy-poll a core each: one live peer test at a time.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
