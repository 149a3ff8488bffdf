# vfio-user interop: vvu's vfio_user::client against libvfio-user's gpio-pci-idio-16 sample (an
# independent implementation, built from ../shared/peers/ into the build tree), and a hostile
# client against vvu-device's PCI socket. Scripts in tests/interop/vfio_user/. A missing peer
# or tool makes a test skip (exit 77), or fail when CI=true. Included from tests/CMakeLists.txt.

set(vvu_vfu_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/vfio_user)

# vvu-test-vfio-gpio SOCKET: probes the gpio sample through vfio_user::client.
add_executable(vvu-test-vfio-gpio ${vvu_vfu_dir}/gpio_probe.cpp)
target_link_libraries(vvu-test-vfio-gpio PRIVATE vvu::vvu)
vvu_project_flags(vvu-test-vfio-gpio)

# vvu-test-vfio-hostile [--report] SOCKET: malformed messages against any vfio-user server.
add_executable(vvu-test-vfio-hostile ${vvu_vfu_dir}/hostile_client.cpp)
target_link_libraries(vvu-test-vfio-hostile PRIVATE vvu::vvu)
vvu_project_flags(vvu-test-vfio-hostile)

add_test(NAME interop.vfio_user.gpio
  COMMAND bash ${vvu_vfu_dir}/gpio.sh
    --probe $<TARGET_FILE:vvu-test-vfio-gpio>
    --libvfio-user ${CMAKE_CURRENT_BINARY_DIR}/libvfio-user)
set_tests_properties(interop.vfio_user.gpio PROPERTIES
  LABELS "interop"
  # The first run builds libvfio-user (≈ 30 s on two busy cores); later runs take a second.
  TIMEOUT 300
  SKIP_RETURN_CODE 77)

if(TARGET vvu-device)
  add_test(NAME interop.vfio_user.hostile.vvu-device
    COMMAND bash ${vvu_vfu_dir}/hostile-device.sh
      --device $<TARGET_FILE:vvu-device>
      --hostile $<TARGET_FILE:vvu-test-vfio-hostile>)
  set_tests_properties(interop.vfio_user.hostile.vvu-device PROPERTIES
    LABELS "interop"
    # 25 cases, one of which waits out the server's 2 s receive timeout.
    TIMEOUT 180
    SKIP_RETURN_CODE 77)
else()
  message(STATUS "vvu: interop.vfio_user.hostile.vvu-device needs the vvu-device example")
endif()
