# QEMU 7.2 guests (Linux virtio-net, TCG) ping each other through a two-port vhost-user
# back-end: DPDK's (proves the guest) and vvu-forward in xconnect and learn modes. The guest is
# built into the build tree by tests/guest/build-guest.sh (Debian's cloud kernel + busybox).
if(NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.qemu.* tests need the vvu-forward example (VVU_BUILD_EXAMPLES)")
  return()
endif()

set(vvu_guest_dir ${PROJECT_BINARY_DIR}/guest)
foreach(backend dpdk vvu-forward:xconnect vvu-forward:learn)
  string(REPLACE ":" "." name ${backend})
  add_test(NAME interop.qemu.ping.${name}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/guest/check-guest.sh ${backend} ${vvu_guest_dir}
            $<TARGET_FILE:vvu-forward>)
  set_tests_properties(interop.qemu.ping.${name} PROPERTIES
    LABELS "interop" TIMEOUT 300 SKIP_RETURN_CODE 77 RESOURCE_LOCK vvu_live_peers)
endforeach()
