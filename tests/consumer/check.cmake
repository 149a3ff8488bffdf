# ctest "package.consumer": install the build tree into a scratch prefix, then configure,
# build and run tests/consumer against it with nothing but CMAKE_PREFIX_PATH set.
file(REMOVE_RECURSE ${VVU_SCRATCH})
set(prefix ${VVU_SCRATCH}/prefix)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()

run(${CMAKE_COMMAND} --install ${VVU_BUILD_DIR} --prefix ${prefix})
foreach(f include/vvu/vvu.hpp lib/cmake/vvu/vvuConfig.cmake lib/cmake/vvu/vvuConfigVersion.cmake
          lib/cmake/vvu/vvuTargets.cmake lib/pkgconfig/vvu.pc)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "installed tree lacks ${f}")
  endif()
endforeach()
run(${CMAKE_COMMAND} -S ${VVU_CONSUMER_SOURCE} -B ${VVU_SCRATCH}/build
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${VVU_CXX})
run(${CMAKE_COMMAND} --build ${VVU_SCRATCH}/build)
run(${VVU_SCRATCH}/build/consumer)
