# Live migration of QEMU 7.2 guests (Linux virtio-net, TCG) whose NIC is on vvu-forward
# (tests/interop/migration/): a guest pinging another migrated live to a second QEMU on another
# port of the same vvu-forward (the switch learns its new port), the same while the other guest
# streams self-checking frames into its memory (a page the back-end wrote and did not log in
# the dirty log would arrive stale), and a guest saved to a file and restored on the same port.
# QEMU drives it over QMP (qmp.py, python3). The reference is the stream test's negative control,
# on DPDK testpmd's vhost back-end with its dirty log hidden. The guest is built into the build tree by
# tests/guest/build-guest.sh, as for interop.qemu.*.
# A missing peer makes a test skip (exit 77), or fail when CI=true.
# Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.migration.* tests need the vvu-forward example (VVU_BUILD_EXAMPLES)")
  return()
endif()

set(vvu_mig_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/migration)
set(vvu_mig_guest "--guest-dir ${PROJECT_BINARY_DIR}/guest")
set(vvu_mig_forward "--forward $<TARGET_FILE:vvu-forward>")

# name | script | arguments | label
set(vvu_mig_tests
  # 80 pings at 0.2 s, migrated after the 10th; at most 5 lost in the switch-over.
  "ping.learn|live.sh|--check ping ${vvu_mig_forward} ${vvu_mig_guest}|interop"
  # 200 frames/s for 25 s, migrated after the first 400; the destination's RAM equals the
  # source's; each frame checked 8 s after it came, none corrupt.
  "stream.learn|live.sh|--check stream ${vvu_mig_forward} ${vvu_mig_guest}|interop"
  "save-restore.learn|save-restore.sh|${vvu_mig_forward} ${vvu_mig_guest}|interop"
  # The negative control of the stream test: DPDK's back-end with its dirty log hidden by a proxy
  # (log-blind-proxy.py); passes only when the RAM differs and A finds corrupt frames, as they must.
  "stream.dpdk-no-log|live.sh|--check stream --testpmd --blind-log ${vvu_mig_guest}|reference")

# The same two with guest A's ports behind vvu-devices (virtio-vhost-user): the dirty log crosses
# the device as an area of its BAR window.
if(TARGET vvu-device)
  set(vvu_mig_device "--device $<TARGET_FILE:vvu-device>")
  list(APPEND vvu_mig_tests
    "ping.vvu-device|live.sh|--check ping ${vvu_mig_forward} ${vvu_mig_device} ${vvu_mig_guest}|interop"
    "stream.vvu-device|live.sh|--check stream ${vvu_mig_forward} ${vvu_mig_device} ${vvu_mig_guest}|interop")
else()
  message(STATUS "vvu: interop.migration.*.vvu-device tests need the vvu-device example")
endif()

foreach(spec IN LISTS vvu_mig_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 script)
  list(GET spec 2 args)
  list(GET spec 3 label)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.migration.${name} COMMAND bash ${vvu_mig_dir}/${script} ${args})
  set_tests_properties(interop.migration.${name} PROPERTIES
    LABELS ${label}
    # Two or three QEMUs under TCG: boot 10-25 s, the run 20 s, a migration 2-5 s; ≈ 35-50 s on
    # a quiet machine. Each wait inside is bounded well below this.
    TIMEOUT 240
    SKIP_RETURN_CODE 77
    # Guests and back-ends want the two cores: one live peer test at a time.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
