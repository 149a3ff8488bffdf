# QEMU 7.2 guests (Linux drivers, TCG) on vhost-user devices other than a NIC
# (tests/interop/devices/): a disk on qemu-storage-daemon and on vvu-blk-server (two boots: write
# files, read them back; 1 and 2 request queues; and vvu-blk-server killed and restarted under a
# guest that writes: crash recovery through the inflight area), and a hardware RNG on
# vvu-rng-server, on a unix: port and behind vvu-device. The guest is built into the build tree
# by tests/guest/build-guest.sh, as for interop.qemu.*.
# A missing peer makes a test skip (exit 77), or fail when CI=true.
# Included from tests/CMakeLists.txt.

set(vvu_devices_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/devices)
set(vvu_devices_guest "--guest-dir ${PROJECT_BINARY_DIR}/guest")

# name | script | arguments
set(vvu_devices_tests
  "guest-disk.qsd.q1|guest-disk.sh|--server qsd --queues 1 ${vvu_devices_guest}"
  "guest-disk.qsd.q2|guest-disk.sh|--server qsd --queues 2 ${vvu_devices_guest}")
if(TARGET vvu-blk-server)
  list(APPEND vvu_devices_tests
    "guest-disk.vvu-blk-server.q1|guest-disk.sh|--server vvu-blk-server:$<TARGET_FILE:vvu-blk-server> --queues 1 ${vvu_devices_guest}"
    "guest-disk.vvu-blk-server.q2|guest-disk.sh|--server vvu-blk-server:$<TARGET_FILE:vvu-blk-server> --queues 2 ${vvu_devices_guest}"
    # Boot 1 writes while vvu-blk-server is killed (SIGKILL) and started again 3 times; QEMU
    # reconnects (reconnect=1) and hands the new one the inflight area.
    "guest-disk-crash.vvu-blk-server|guest-disk-crash.sh|--server $<TARGET_FILE:vvu-blk-server> ${vvu_devices_guest}")
else()
  message(STATUS "vvu: interop.devices.guest-disk*.vvu-blk-server tests need the vvu-blk-server example")
endif()
if(TARGET vvu-rng-server)
  list(APPEND vvu_devices_tests
    "guest-rng|guest-rng.sh|--server $<TARGET_FILE:vvu-rng-server> ${vvu_devices_guest}")
  if(TARGET vvu-device)
    # The same back-end behind vvu-device (virtio-vhost-user): vvu-rng-server --port vvu:PCI.
    list(APPEND vvu_devices_tests
      "guest-rng.vvu-device|guest-rng.sh|--server $<TARGET_FILE:vvu-rng-server> --device $<TARGET_FILE:vvu-device> ${vvu_devices_guest}")
  endif()
else()
  message(STATUS "vvu: interop.devices.guest-rng needs the vvu-rng-server example")
endif()

foreach(spec IN LISTS vvu_devices_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 script)
  list(GET spec 2 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.devices.${name} COMMAND bash ${vvu_devices_dir}/${script} ${args})
  set_tests_properties(interop.devices.${name} PROPERTIES
    LABELS "interop"
    # A boot takes 10-25 s under TCG (longer while the two cores compile); the disk tests boot
    # twice. Each wait inside is bounded well below this.
    TIMEOUT 420
    SKIP_RETURN_CODE 77
    # Guests and back-ends want the two cores: one live peer test at a time.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
