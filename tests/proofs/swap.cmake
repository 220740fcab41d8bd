# Swapping an index function for a wrong variant must change the kernel that calls it
# (tests/proofs/swap_probe.cpp): each variant below is a copy of core/index_math.hpp with one
# function's body replaced, put before the real header on the probe's include path. The probe is
# built once as is (all kernels) and once per variant (only the kernel that variant reaches);
# swap_test.cmake compares their lines. A body that is no longer in index_math.hpp stops the
# configuration, so a variant cannot silently stop applying.

function(dsv4_swap_probe target only)
  add_executable(${target} ${CMAKE_CURRENT_SOURCE_DIR}/proofs/swap_probe.cpp)
  dsv4_target_defaults(${target})
  target_compile_options(${target} PRIVATE ${DSV4_TEST_OPTIMIZATION})
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/bench)
  target_compile_definitions(${target} PRIVATE DSV4_SWAP_ONLY=${only})
endfunction()

set(index_math_header ${PROJECT_SOURCE_DIR}/include/dsv4/core/index_math.hpp)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${index_math_header})
file(READ ${index_math_header} index_math_source)
dsv4_swap_probe(swap_probe 0)

# A variant: its name, the probe kernel it must change (DSV4_SWAP_ONLY number and name), the exact
# line of index_math.hpp it replaces and the wrong line.
function(dsv4_swap_variant name only kernel right wrong)
  string(FIND "${index_math_source}" "${right}\n" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "tests/proofs/swap.cmake: '${right}' is no longer in core/index_math.hpp (variant ${name})")
  endif()
  string(REPLACE "${right}\n" "${wrong}\n" mutated "${index_math_source}")
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/swap/${name})
  file(WRITE ${dir}/dsv4/core/index_math.hpp "${mutated}")
  dsv4_swap_probe(swap_probe_${name} ${only})
  target_include_directories(swap_probe_${name} BEFORE PRIVATE ${dir})
  set(test "proofs: swapping in ${name} changes ${kernel}")
  add_test(NAME "${test}" COMMAND ${CMAKE_COMMAND} -DPROBE=$<TARGET_FILE:swap_probe>
                                  -DVARIANT=$<TARGET_FILE:swap_probe_${name}> -DKERNEL=${kernel} -P
                                  ${CMAKE_CURRENT_SOURCE_DIR}/proofs/swap_test.cmake)
  set_tests_properties("${test}" PROPERTIES LABELS proofs)
endfunction()

# The wrong variants of index_math_proof_test.cpp's negative proofs, plus a rotation of the FP4
# lanes (a bijection, but not the decoder's order).
dsv4_swap_variant(fp4_nibble_of_byte 1 fp4_dequantize "  return col % 2;" "  return (col / 2) % 2;")
dsv4_swap_variant(fp4_lane_column_rotated 2 fp4_gemv "  return 16 * (v / 2) + 2 * (v % 2) + 4 * (l % 4) + l / 4;"
                  "  return 16 * (v / 2) + 2 * (v % 2) + 4 * ((l + 1) % 4) + l / 4;")
dsv4_swap_variant(block_scale_index_transposed 3 fp8_gemv
                  "  return block_of(row, block) * stride + block_of(col, block);"
                  "  return block_of(col, block) * stride + block_of(row, block);")
dsv4_swap_variant(fp8_lane_column_dropping_a_lane 3 fp8_gemv "  return 16 * (v / 2) + 2 * l + v % 2;"
                  "  return 16 * (v / 2) + 2 * (l % 7) + v % 2;")
dsv4_swap_variant(pool_channel_halves_swapped 4 compressor "  return overlap ? select(p < start, c, dim + c) : c;"
                  "  return overlap ? select(p < start, dim + c, c) : c;")
dsv4_swap_variant(visible_entries_floor_t 5 hca_step "  return (t + 1) / ratio;" "  return t / ratio;")
