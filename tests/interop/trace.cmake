# vvu-trace between real peers: DPDK testpmd virtio-user -> vvu-trace -> testpmd net_vhost and
# vvu-traffic -> vvu-trace -> net_vhost (the session traced, the rate with and without the
# tracer), vvu-blk -> vvu-trace -> qemu-storage-daemon (two sessions, the back-end channel);
# each checks that vvu-decode of the --capture file prints the live trace line for line. The
# scripts are in tests/interop/trace/ (lib.sh says how they work). A missing peer makes a test
# skip (exit 77), or fail when CI=true. Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-trace OR NOT TARGET vvu-decode)
  message(STATUS "vvu: interop.trace.* tests need the vvu-trace and vvu-decode examples")
  return()
endif()

set(vvu_trace_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/trace)
set(vvu_trace_tools --trace $<TARGET_FILE:vvu-trace> --decode $<TARGET_FILE:vvu-decode>)

# testpmd virtio-user -> vvu-trace -> testpmd net_vhost: no vvu tool but the tracer.
add_test(NAME interop.trace.dpdk COMMAND bash ${vvu_trace_dir}/dpdk.sh ${vvu_trace_tools})
set(vvu_trace_tests interop.trace.dpdk)
if(TARGET vvu-traffic)
  add_test(NAME interop.trace.net COMMAND bash ${vvu_trace_dir}/net.sh ${vvu_trace_tools}
    --traffic $<TARGET_FILE:vvu-traffic>)
  list(APPEND vvu_trace_tests interop.trace.net)
endif()
if(TARGET vvu-blk)
  add_test(NAME interop.trace.blk COMMAND bash ${vvu_trace_dir}/blk.sh ${vvu_trace_tools}
    --blk $<TARGET_FILE:vvu-blk>)
  list(APPEND vvu_trace_tests interop.trace.blk)
endif()
if(vvu_trace_tests)
  set_tests_properties(${vvu_trace_tests} PROPERTIES
    LABELS "interop"
    # A run takes 10-30 s; peers start slowly when the two cores are busy.
    TIMEOUT 240
    SKIP_RETURN_CODE 77
    # testpmd busy-polls a core (two testpmds: both): one live peer test at a time.
    RESOURCE_LOCK vvu_live_peers)
endif()
