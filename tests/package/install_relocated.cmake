# cmake -DBUILD_DIR=<dsv4 build> -DPREFIX=<install prefix> -DMOVED=<final place> -P install_relocated.cmake
# Installs dsv4 from a build tree, then moves the installed tree elsewhere: consuming it from
# there proves the package holds no absolute path of the place it was installed to.
file(REMOVE_RECURSE ${PREFIX} ${MOVED})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX} COMMAND_ERROR_IS_FATAL ANY)
file(RENAME ${PREFIX} ${MOVED})
file(GLOB_RECURSE config_files ${MOVED}/*.cmake)
foreach(f IN LISTS config_files)
  file(READ ${f} text)
  string(FIND "${text}" "${PREFIX}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "${f} names the install prefix ${PREFIX}: the package is not relocatable")
  endif()
endforeach()
message(STATUS "installed and relocated to ${MOVED}")
