# The VVU driver inside a guest (the seed's topology): vvu-forward --port vfio:BDF in a QEMU 11
# guest whose PCI bus holds vfio-user-pci functions of vvu-devices on this host
# (tests/interop/vvu-guest/vvu-guest.sh has the topologies). QEMU 11 comes from a Debian sid
# root built once into the build tree (tests/guest/build-qemu11.sh: root and the Debian mirror);
# where it cannot be built the tests skip, and fail when CI=true. Included from
# tests/CMakeLists.txt.
if(NOT TARGET vvu-device OR NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.vvu-guest.* tests need the vvu-device and vvu-forward examples")
  return()
endif()

foreach(scenario ping restart garbage txonly)
  add_test(NAME interop.vvu-guest.${scenario}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/interop/vvu-guest/vvu-guest.sh ${scenario}
            ${PROJECT_BINARY_DIR}/guest $<TARGET_FILE:vvu-forward> $<TARGET_FILE:vvu-device>
            ${PROJECT_BINARY_DIR}/qemu11)
  set_tests_properties(interop.vvu-guest.${scenario} PROPERTIES
    LABELS "interop"
    # The first one also builds QEMU 11's root (debootstrap, a few minutes).
    TIMEOUT 900
    SKIP_RETURN_CODE 77
    RESOURCE_LOCK vvu_live_peers)
endforeach()
