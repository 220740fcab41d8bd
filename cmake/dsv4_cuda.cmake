# CUDA detection and the dependencies of dsv4::cuda. Used by the build and by the installed
# package config, so that a consumer asking for the `cuda` component gets the same targets.

# dsv4_detect_cuda(<out-var>): TRUE when DSV4_ENABLE_CUDA allows CUDA and a CUDA compiler and
# toolkit are usable; enables the CUDA language in that case. ON makes a missing toolkit an error.
# A macro, not a function: enable_language() must run at file scope.
macro(dsv4_detect_cuda out)
  if(NOT DEFINED DSV4_ENABLE_CUDA)
    set(DSV4_ENABLE_CUDA AUTO)
  endif()
  set(${out} FALSE)
  if(NOT DSV4_ENABLE_CUDA STREQUAL "OFF")
    include(CheckLanguage)
    check_language(CUDA)
    find_package(CUDAToolkit QUIET)
    if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
      if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
        set(CMAKE_CUDA_ARCHITECTURES "80;90a" CACHE STRING "CUDA architectures to build for")
      endif()
      enable_language(CUDA)
      set(${out} TRUE)
    elseif(DSV4_ENABLE_CUDA STREQUAL "ON")
      message(FATAL_ERROR "DSV4_ENABLE_CUDA=ON but no usable CUDA compiler/toolkit was found")
    endif()
  endif()
  message(STATUS "dsv4: CUDA ${${out}} (DSV4_ENABLE_CUDA=${DSV4_ENABLE_CUDA})")
endmacro()

# dsv4_link_cuda_deps(<target> [BUILD_ONLY]): the CUDA runtime, CCCL and cuBLAS, plus the C++20
# flag for nvcc. BUILD_ONLY keeps them out of the exported target: the installed package config
# calls this function again on the consumer's machine, where the toolkit may live elsewhere.
function(dsv4_link_cuda_deps target)
  find_package(CUDAToolkit REQUIRED)
  find_package(CCCL CONFIG QUIET HINTS "${CUDAToolkit_LIBRARY_DIR}/cmake")
  set(deps CUDA::cudart CUDA::cublas)
  if(TARGET CCCL::CCCL)
    list(APPEND deps CCCL::CCCL)
  endif()
  # CMake 3.25 knows no C++20 dialect flag for nvcc 13, so CMAKE_CUDA_STANDARD 20 passes nothing.
  set(opts $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr>)
  if("BUILD_ONLY" IN_LIST ARGN)
    list(TRANSFORM deps REPLACE "(.+)" "$<BUILD_INTERFACE:\\1>")
    set(opts "$<BUILD_INTERFACE:${opts}>")
    set(defs "$<BUILD_INTERFACE:DSV4_HAS_CUDA=1>")
  else()
    set(defs DSV4_HAS_CUDA=1)
  endif()
  target_link_libraries(${target} INTERFACE ${deps})
  target_compile_definitions(${target} INTERFACE ${defs})
  target_compile_options(${target} INTERFACE ${opts})
endfunction()
