# cmake --install: headers, library, examples, CMake package and pkg-config file.
include(CMakePackageConfigHelpers)

install(DIRECTORY include/vvu DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS vvu EXPORT vvuTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT vvuTargets NAMESPACE vvu:: FILE vvuTargets.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/vvu)

configure_package_config_file(cmake/vvuConfig.cmake.in
  ${PROJECT_BINARY_DIR}/vvuConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/vvu)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/vvuConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/vvuConfig.cmake ${PROJECT_BINARY_DIR}/vvuConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/vvu)

configure_file(cmake/vvu.pc.in ${PROJECT_BINARY_DIR}/vvu.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/vvu.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
