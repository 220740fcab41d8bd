# A negative-compile test's verdict (run by ctest through dsv4_add_compile_fail_test):
#
#   cmake -DSOURCE=<file> -DREGEX=<regex> -P check_compile_fail.cmake -- <compiler command...>
#
# Passes only if the command fails (a non-zero exit) and one line of what it printed matches
# <regex> once every mention of <file> is removed: the expected text must come from the rule's
# own diagnostic, never from the test's path or name, which the compiler repeats on every line.
set(cmd "")
set(seen_separator FALSE)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE ${last})
  if(seen_separator)
    list(APPEND cmd "${CMAKE_ARGV${i}}")
  elseif(CMAKE_ARGV${i} STREQUAL "--")
    set(seen_separator TRUE)
  endif()
endforeach()
if(NOT cmd OR NOT SOURCE OR NOT REGEX)
  message(FATAL_ERROR "usage: cmake -DSOURCE=<file> -DREGEX=<regex> -P check_compile_fail.cmake -- <command...>")
endif()

execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
if(rc EQUAL 0)
  message(FATAL_ERROR "FAIL: the case compiled; it must be rejected with a message matching '${REGEX}'\n${out}")
endif()

get_filename_component(name "${SOURCE}" NAME)
get_filename_component(stem "${SOURCE}" NAME_WE)
foreach(mention IN ITEMS "${SOURCE}" "${name}" "${stem}")
  string(REPLACE "${mention}" "<source>" out "${out}")
endforeach()
string(REPLACE ";" "," out "${out}")  # a list separator would split lines wrongly
string(REPLACE "\n" ";" lines "${out}")
foreach(line IN LISTS lines)
  if(line MATCHES "${REGEX}")
    message(STATUS "rejected as expected: ${line}")
    return()
  endif()
endforeach()
message(FATAL_ERROR "FAIL: rejected (exit ${rc}), but no line matches '${REGEX}'\n${out}")
