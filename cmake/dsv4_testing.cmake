# Helpers for dsv4's own tests, benchmarks and examples (not installed).
#
#   dsv4_add_test(<name> [PORTABLE] SOURCES <files...> [LIBS <targets...>])
#       A Catch2 test executable; each of its test cases is a ctest entry "<name>: <case>".
#       PORTABLE builds it for the compiler's default target, without DSV4_NATIVE's -march=native.
#   dsv4_add_cuda_test(<name> SOURCES <files...>)
#       The same for CUDA sources, built only when CUDA is enabled; exits 77 (ctest: skipped)
#       when no GPU is present.
#   dsv4_add_compile_fail_test(<name> <source> <regex> [flags...])
#       <name> compiles <source> with -DDSV4_EXPECT_FAILURE (and the flags) and passes only if
#       the compile fails and a line of the compiler's output, with the source's path and name
#       taken out, matches <regex>; a control entry compiles <source> as is and must
#       succeed (so a case fails for the right reason, not for any error).
#   dsv4_add_header_tests()
#       One generated translation unit per public header: every .hpp compiles on its own with
#       the host compiler, every .cuh with nvcc.
#   dsv4_add_bench(<name> SOURCES <files...>)
#       A Google Benchmark executable.

set(DSV4_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion)
option(DSV4_WERROR "Treat warnings in dsv4's own targets as errors" OFF)
if(DSV4_WERROR)
  list(APPEND DSV4_WARNINGS -Werror)
endif()
# Tests and benchmarks run where they are built, so they target this machine's vector units
# (AVX2/FMA on the x86-64 machines dsv4 is developed on). The library itself sets no such flag.
option(DSV4_NATIVE "Compile dsv4's tests, benchmarks and examples with -march=native" ON)
set(DSV4_ARCH_FLAGS "")
if(DSV4_NATIVE)
  set(DSV4_ARCH_FLAGS -march=native)
endif()

# Tests build at -O2 in the Release configuration: a third less compile time than -O3 for the
# template-heavy model and attention tests (20 s against 30 s of CPU for attn_released_test.cpp),
# which run in seconds either way; benchmarks and examples keep the configuration's -O3.
set(DSV4_TEST_OPTIMIZATION $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CONFIG:Release>>:-O2>)

find_package(Catch2 REQUIRED)
find_package(nlohmann_json REQUIRED)
include(Catch)
add_library(dsv4_catch_main OBJECT ${PROJECT_SOURCE_DIR}/tests/catch_main.cpp)
target_link_libraries(dsv4_catch_main PUBLIC Catch2::Catch2)

function(dsv4_target_defaults target)  # [PORTABLE]: without DSV4_ARCH_FLAGS
  cmake_parse_arguments(arg "PORTABLE" "" "" ${ARGN})
  target_link_libraries(${target} PRIVATE dsv4::dsv4)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DSV4_WARNINGS}>)
  if(NOT arg_PORTABLE)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${DSV4_ARCH_FLAGS}>)
  elseif(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # 32-byte vector arguments without AVX: GCC notes the ABI change; the target is one build.
    target_compile_options(${target} PRIVATE -Wno-psabi)
  endif()
endfunction()

function(dsv4_add_test name)
  cmake_parse_arguments(arg "PORTABLE" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${arg_SOURCES})
  if(arg_PORTABLE)
    dsv4_target_defaults(${name} PORTABLE)
  else()
    dsv4_target_defaults(${name})
  endif()
  target_compile_options(${name} PRIVATE ${DSV4_TEST_OPTIMIZATION})
  target_link_libraries(${name} PRIVATE dsv4_catch_main Catch2::Catch2 nlohmann_json::nlohmann_json ${arg_LIBS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  target_compile_definitions(${name} PRIVATE DSV4_FIXTURE_DIR="${PROJECT_SOURCE_DIR}/tests/fixtures")
  # One ctest entry per Catch2 test case, named "<name>: <case>".
  catch_discover_tests(${name} TEST_PREFIX "${name}: ")
endfunction()

function(dsv4_add_cuda_test name)
  cmake_parse_arguments(arg "" "" "SOURCES;LIBS" ${ARGN})
  if(NOT DSV4_HAS_CUDA_TOOLCHAIN)
    return()
  endif()
  if(NOT TARGET dsv4_cuda_catch_main)
    add_library(dsv4_cuda_catch_main OBJECT ${PROJECT_SOURCE_DIR}/tests/cuda_catch_main.cpp)
    target_link_libraries(dsv4_cuda_catch_main PUBLIC Catch2::Catch2 dsv4::cuda)
  endif()
  add_executable(${name} ${arg_SOURCES})
  dsv4_target_defaults(${name})
  target_link_libraries(${name} PRIVATE dsv4::cuda dsv4_cuda_catch_main Catch2::Catch2 ${arg_LIBS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77 LABELS cuda)
endfunction()

function(dsv4_add_compile_fail_test name source regex)  # extra compiler flags may follow
  get_filename_component(src ${source} ABSOLUTE)
  # No -march here, so GCC's note on 32-byte vector arguments (-Wpsabi) is silenced: its include
  # chain names the test file and is not the rule's message.
  set(cmd ${CMAKE_CXX_COMPILER} -std=c++20 -fsyntax-only -Wno-psabi -I${PROJECT_SOURCE_DIR}/include ${src})
  # The verdict needs a failed compile and the rule's message (cmake/check_compile_fail.cmake).
  add_test(NAME ${name} COMMAND ${CMAKE_COMMAND} -DSOURCE=${src} "-DREGEX=${regex}" -P
                                ${PROJECT_SOURCE_DIR}/cmake/check_compile_fail.cmake -- ${cmd} -DDSV4_EXPECT_FAILURE ${ARGN})
  set_tests_properties(${name} PROPERTIES LABELS compile-fail)
  # One control per source file: it must compile as it is.
  string(MAKE_C_IDENTIFIER ${src} control_id)
  get_property(done GLOBAL PROPERTY dsv4_control_${control_id})
  if(NOT done)
    set_property(GLOBAL PROPERTY dsv4_control_${control_id} TRUE)
    string(REGEX REPLACE "\\.[a-z_0-9]+$" "" control_name "${name}")
    add_test(NAME ${control_name}.control COMMAND ${cmd})
    set_tests_properties(${control_name}.control PROPERTIES LABELS compile-fail)
  endif()
endfunction()

function(dsv4_add_header_tests)
  set(root ${PROJECT_SOURCE_DIR}/include)
  file(GLOB_RECURSE hpp RELATIVE ${root} CONFIGURE_DEPENDS ${root}/dsv4/*.hpp)
  file(GLOB_RECURSE cuh RELATIVE ${root} CONFIGURE_DEPENDS ${root}/dsv4/*.cuh)
  set(gen ${CMAKE_CURRENT_BINARY_DIR}/header_check)
  set(host_tus "")
  foreach(h IN LISTS hpp)
    string(MAKE_C_IDENTIFIER ${h} id)
    # Included twice: the second inclusion checks the include guard.
    file(CONFIGURE OUTPUT ${gen}/${id}.cpp CONTENT "#include \"${h}\"\n#include \"${h}\"\n")
    list(APPEND host_tus ${gen}/${id}.cpp)
  endforeach()
  add_library(dsv4_header_check OBJECT ${host_tus})
  dsv4_target_defaults(dsv4_header_check)
  if(DSV4_HAS_CUDA_TOOLCHAIN AND cuh)
    set(cuda_tus "")
    foreach(h IN LISTS cuh)
      string(MAKE_C_IDENTIFIER ${h} id)
      file(CONFIGURE OUTPUT ${gen}/${id}.cu CONTENT "#include \"${h}\"\n#include \"${h}\"\n")
      list(APPEND cuda_tus ${gen}/${id}.cu)
    endforeach()
    add_library(dsv4_cuda_header_check OBJECT ${cuda_tus})
    target_link_libraries(dsv4_cuda_header_check PRIVATE dsv4::cuda)
  endif()
endfunction()

function(dsv4_add_bench name)
  cmake_parse_arguments(arg "" "" "SOURCES;LIBS" ${ARGN})
  find_package(benchmark REQUIRED)
  add_executable(${name} ${arg_SOURCES})
  dsv4_target_defaults(${name})
  target_link_libraries(${name} PRIVATE benchmark::benchmark ${arg_LIBS})
  # tests/ for the seeded random data the tests use too (tests/random.hpp).
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/bench ${PROJECT_SOURCE_DIR}/tests)
endfunction()
