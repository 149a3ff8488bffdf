# vvu-forward as a vhost-user back-end on a UNIX socket, with DPDK's virtio-user PMD (dpdk-testpmd)
# as the front-end: traffic both ways, split and packed rings, with and without hugepages, and two
# front-ends cross-connected. The scripts are in tests/interop/dpdk/ (lib.sh says how they work);
# each also runs with `--backend dpdk`, DPDK's own vhost PMD in vvu-forward's place. A missing
# dpdk-testpmd (or, for the hugepage tests, no way to get hugepages) makes a test skip (exit 77),
# or fail when CI=true. Included from tests/CMakeLists.txt.

if(NOT TARGET vvu-forward)
  message(STATUS "vvu: interop.dpdk.* tests need the vvu-forward example (VVU_BUILD_EXAMPLES)")
  return()
endif()

set(vvu_dpdk_dir ${CMAKE_CURRENT_SOURCE_DIR}/interop/dpdk)

# name | script | arguments
set(vvu_dpdk_tests
  "to-backend.split|one-way.sh|--direction to-backend --ring split --mem nohuge"
  "to-backend.packed|one-way.sh|--direction to-backend --ring packed --mem nohuge"
  "to-backend.split.hugepages|one-way.sh|--direction to-backend --ring split --mem huge"
  "to-backend.packed.hugepages|one-way.sh|--direction to-backend --ring packed --mem huge"
  # The template check must see a frame that differs from it (one address byte).
  "to-backend.split.unlike-template|one-way.sh|--direction to-backend --ring split --mem nohuge --unlike-template"
  "from-backend.split|one-way.sh|--direction from-backend --ring split --mem nohuge"
  "from-backend.packed|one-way.sh|--direction from-backend --ring packed --mem nohuge"
  "from-backend.split.hugepages|one-way.sh|--direction from-backend --ring split --mem huge"
  "from-backend.packed.hugepages|one-way.sh|--direction from-backend --ring packed --mem huge"
  # Two queue pairs on two forwarding threads (vvu-forward --threads 2): each thread moves frames.
  "to-backend.split.q2.t2|one-way.sh|--direction to-backend --ring split --mem nohuge --queues 2 --threads 2"
  "from-backend.packed.q2.t2|one-way.sh|--direction from-backend --ring packed --mem nohuge --queues 2 --threads 2"
  "xconnect.split|xconnect.sh|--ring split"
  "xconnect.packed|xconnect.sh|--ring packed")

foreach(spec IN LISTS vvu_dpdk_tests)
  string(REPLACE "|" ";" spec "${spec}")
  list(GET spec 0 name)
  list(GET spec 1 script)
  list(GET spec 2 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME interop.dpdk.${name}
    COMMAND bash ${vvu_dpdk_dir}/${script} --backend $<TARGET_FILE:vvu-forward> ${args})
  set_tests_properties(interop.dpdk.${name} PROPERTIES
    LABELS "interop"
    # A run takes 10-20 s; testpmd's start and its stats printing slow down a lot when the two
    # cores are busy with something else.
    TIMEOUT 120
    SKIP_RETURN_CODE 77
    # One live peer test at a time: testpmd busy-polls a core, and two or three peers already
    # share the two cores of the reference machine.
    RESOURCE_LOCK vvu_live_peers)
endforeach()
