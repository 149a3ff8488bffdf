# QEMU 7.2 guests (Linux virtio-net, TCG) ping each other through a two-port vhost-user
# back-end: DPDK's (proves the guest) and vvu-forward in xconnect and learn modes; and, when
# vvu-device is built, with guest B behind vvu-device (virtio-vhost-user) and vvu-forward serving
# it over the device's PCI function (--port vvu:PCI) while guest A stays on a unix: port. The
# guest is built into the build tree by tests/guest/build-guest.sh (Debian's cloud kernel +
# busybox).
if(NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.qemu.* tests need the vvu-forward example (VVU_BUILD_EXAMPLES)")
  return()
endif()

set(vvu_guest_dir ${PROJECT_BINARY_DIR}/guest)
set(vvu_guest_backends dpdk vvu-forward:xconnect vvu-forward:learn)
set(vvu_guest_device)
if(TARGET vvu-device)
  list(APPEND vvu_guest_backends vvu-device:xconnect vvu-device:learn)
  set(vvu_guest_device $<TARGET_FILE:vvu-device>)
else()
  message(STATUS "vvu: interop.qemu.ping.vvu-device.* tests need the vvu-device example")
endif()
# Guest B's session through vvu-trace (it and vvu-decode are found beside vvu-forward).
if(TARGET vvu-trace AND TARGET vvu-decode)
  list(APPEND vvu_guest_backends vvu-trace:learn)
endif()
foreach(backend IN LISTS vvu_guest_backends)
  string(REPLACE ":" "." name ${backend})
  add_test(NAME interop.qemu.ping.${name}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/guest/check-guest.sh ${backend} ${vvu_guest_dir}
            $<TARGET_FILE:vvu-forward> ${vvu_guest_device})
  # The dpdk run is the reference (the same guests through testpmd's vhost): no vvu code in it.
  set(label interop)
  if(backend STREQUAL "dpdk")
    set(label reference)
  endif()
  set_tests_properties(interop.qemu.ping.${name} PROPERTIES
    LABELS ${label} TIMEOUT 300 SKIP_RETURN_CODE 77 RESOURCE_LOCK vvu_live_peers)
endforeach()
