# cmake -P cmake/install_deps.cmake
# Installs what building and testing dsv4 needs from the machine's package manager (Debian/Ubuntu
# apt), only where a package is missing. Nothing is downloaded at configure, build or test time.
set(packages g++ make catch2 libbenchmark-dev nlohmann-json3-dev pkg-config libpcre2-dev libz3-dev)
set(missing "")
foreach(p IN LISTS packages)
  execute_process(COMMAND dpkg-query -W -f=\${Status} ${p} OUTPUT_VARIABLE st ERROR_QUIET RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR NOT st MATCHES "install ok installed")
    list(APPEND missing ${p})
  endif()
endforeach()
if(NOT missing)
  message(STATUS "dsv4: build dependencies present")
  return()
endif()
find_program(APT apt-get)
if(NOT APT)
  message(FATAL_ERROR "dsv4: missing ${missing} and no apt-get here; install them with your package manager")
endif()
set(sudo "")
execute_process(COMMAND id -u OUTPUT_VARIABLE uid OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT uid STREQUAL "0")
  set(sudo sudo)
endif()
message(STATUS "dsv4: installing ${missing}")
execute_process(COMMAND ${sudo} ${APT} update -qq COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND ${CMAKE_COMMAND} -E env DEBIAN_FRONTEND=noninteractive
                        ${sudo} ${APT} install -y -qq --no-install-recommends ${missing}
                COMMAND_ERROR_IS_FATAL ANY)
