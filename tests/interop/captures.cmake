# Live re-captures of the committed vhost-user sessions (tests/captures/*.vhu): each test runs
# the peer (QEMU or DPDK testpmd) against tests/captures/capture.py again, into
# ${CMAKE_CURRENT_BINARY_DIR}/captures-live/, and compares the message sequence (direction,
# request, flags, size, fd count) with the committed file. A missing peer makes a test skip
# (exit 77), or fail when CI=true. Included from tests/CMakeLists.txt.

set(vvu_captures_dir ${CMAKE_CURRENT_SOURCE_DIR}/captures)
set(vvu_captures
  qemu-7.2-net-opening
  qemu-7.2-net-opening-memslots
  dpdk-22.11-virtio-user-split
  dpdk-22.11-virtio-user-packed
  dpdk-22.11-virtio-user-mq2
  dpdk-22.11-virtio-user-split-stop)

foreach(name IN LISTS vvu_captures)
  add_test(NAME interop.capture.${name}
    COMMAND bash ${vvu_captures_dir}/check-live.sh ${name}
            ${CMAKE_CURRENT_BINARY_DIR}/captures-live)
  # Label "reference", not "interop": the peer talks to capture.py, no vvu code runs.
  set_tests_properties(interop.capture.${name} PROPERTIES
    LABELS "reference"
    TIMEOUT 120
    SKIP_RETURN_CODE 77
    # One live peer at a time: testpmd busy-polls both cores of a small machine, and a starved
    # peer could pause longer than capture.py's idle bound in the middle of its setup.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
