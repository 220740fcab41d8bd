# Smoke tests of 01_generate and dsv4-run (examples/), run by ctest as
#   cmake -DMODE=<mode> -DRUN=<dsv4-run> [-DGENERATE=<01_generate>] [-DFIXTURE=<tiny_v4 dir>]
#         [-DTOKENIZER=<tiny_v4_tokenizer.json>] [-DWORK=<scratch dir>] -P examples_test.cmake
# Modes:
#   same_ids     dsv4-run on the tiny checkpoint prints the ids 01_generate prints (greedy, same prompt)
#   mtp_ids      dsv4-run --mtp on a random tiny model prints the ids plain greedy decoding prints
#   missing_dir  a path that does not exist: exit code 2 and a message
#   no_config    a directory without config.json: exit code 2, "not a DeepSeek-V4 checkpoint"
#   no_preset    a config.json that matches no compiled preset: exit code 2, the closest preset named
#   random       --random-weights tiny runs and says that its text is noise
#   chat         --chat on the tiny checkpoint with the tiny tokenizer (tests/fixtures/text/
#                tiny_v4_tokenizer.json: the chat markers and ASCII below id 128), two user turns on
#                stdin: both answered, and the second turn prefills only its new tokens (the cache
#                keeps the first turn's prompt and reply)
#   chat_think   the same with --think, sampled with a seed whose first reply closes its reasoning
#                with </think>: the reasoning is split off, and the second turn, whose rendering
#                drops it, goes back to the first turn's assistant opening and feeds the rest
set(prompt 0,17,42,99,5,63,7,120)

# Runs the command in ARGN; sets <prefix>_rc, <prefix>_out (stdout) and <prefix>_err (stderr).
function(run_command prefix)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "$ ${ARGN}\n-- exit ${rc}\n-- stdout:\n${out}-- stderr:\n${err}")
  set(${prefix}_rc "${rc}" PARENT_SCOPE)
  set(${prefix}_out "${out}" PARENT_SCOPE)
  set(${prefix}_err "${err}" PARENT_SCOPE)
endfunction()

# The first line of `text`.
function(first_line text out)
  string(REGEX MATCH "^[^\n]*" line "${text}")
  set(${out} "${line}" PARENT_SCOPE)
endfunction()

function(expect_rc prefix want)
  if(NOT "${${prefix}_rc}" STREQUAL "${want}")
    message(FATAL_ERROR "exit code ${${prefix}_rc}, expected ${want}")
  endif()
endfunction()

function(expect_match prefix regex)
  if(NOT "${${prefix}_out}${${prefix}_err}" MATCHES "${regex}")
    message(FATAL_ERROR "the output does not match '${regex}'")
  endif()
endfunction()

function(expect_same_ids a b)
  first_line("${${a}_out}" ids_a)
  first_line("${${b}_out}" ids_b)
  if(NOT ids_a MATCHES "^[0-9]+( [0-9]+)*$")
    message(FATAL_ERROR "the first line '${ids_a}' is not a list of token ids")
  endif()
  if(NOT ids_a STREQUAL ids_b)
    message(FATAL_ERROR "different ids:\n  ${ids_a}\n  ${ids_b}")
  endif()
  message(STATUS "same ids: ${ids_a}")
endfunction()

if(MODE STREQUAL "same_ids")
  run_command(gen ${GENERATE} ${FIXTURE} --prompt-ids ${prompt} --max-tokens 8)
  run_command(run ${RUN} ${FIXTURE} --prompt-ids ${prompt} --max-tokens 8)
  expect_rc(gen 0)
  expect_rc(run 0)
  expect_same_ids(gen run)
  expect_match(run "decode: +[0-9]+ tokens .* tokens/s")
  expect_match(run "KV cache")
elseif(MODE STREQUAL "mtp_ids")
  run_command(plain ${RUN} --random-weights tiny --prompt-ids ${prompt} --max-tokens 12 --ignore-eos)
  run_command(mtp ${RUN} --random-weights tiny --prompt-ids ${prompt} --max-tokens 12 --ignore-eos --mtp)
  expect_rc(plain 0)
  expect_rc(mtp 0)
  expect_same_ids(plain mtp)
  expect_match(mtp "acceptance rate [0-9.]+%")
elseif(MODE STREQUAL "missing_dir")
  run_command(run ${RUN} ${WORK}/does-not-exist --prompt-ids 1,2,3)
  expect_rc(run 2)
  expect_match(run "does-not-exist: no such directory")
elseif(MODE STREQUAL "no_config")
  file(REMOVE_RECURSE ${WORK}/empty)
  file(MAKE_DIRECTORY ${WORK}/empty)
  run_command(run ${RUN} ${WORK}/empty --prompt-ids 1,2,3)
  expect_rc(run 2)
  expect_match(run "not a DeepSeek-V4 checkpoint \\(no config.json")
elseif(MODE STREQUAL "no_preset")
  file(READ ${FIXTURE}/config.json config)
  string(REPLACE "\"vocab_size\": 128" "\"vocab_size\": 130" config "${config}")
  file(WRITE ${WORK}/other_shape/config.json "${config}")
  run_command(run ${RUN} ${WORK}/other_shape --prompt-ids 1,2,3)
  expect_rc(run 2)
  expect_match(run "matches no preset.*closest is tiny_v4 .*vocab_size is 130")
elseif(MODE STREQUAL "random")
  run_command(run ${RUN} --random-weights tiny --prompt-ids 1,2,3 --max-tokens 4)
  expect_rc(run 0)
  expect_match(run "noise")
  first_line("${run_out}" ids)
  if(NOT ids MATCHES "^[0-9]+( [0-9]+)*$")
    message(FATAL_ERROR "the first line '${ids}' is not a list of token ids")
  endif()
elseif(MODE MATCHES "^chat(_think)?$")
  # Two user messages, then the end of input. Only printable ASCII: the tiny tokenizer's other
  # bytes have ids the tiny model cannot take.
  file(WRITE ${WORK}/chat_input.txt "hello, how is the weather?\nis it hot there?\n")
  set(args --tokenizer ${TOKENIZER} --chat --system "You are terse." --max-tokens 24)
  if(MODE STREQUAL "chat_think")
    # A seed whose first reply (sampled at temperature 1) holds </think>: greedy decoding of the
    # random model never draws it.
    list(APPEND args --think --temperature 1 --seed 6)
  endif()
  execute_process(COMMAND ${RUN} ${FIXTURE} ${args} INPUT_FILE ${WORK}/chat_input.txt
                  RESULT_VARIABLE run_rc OUTPUT_VARIABLE run_out ERROR_VARIABLE run_err)
  message(STATUS "$ ${RUN} ${FIXTURE} ${args} < chat_input.txt\n-- exit ${run_rc}\n-- stdout:\n${run_out}"
                 "-- stderr:\n${run_err}")
  expect_rc(run 0)
  # One line per turn on stderr: [turn N: P prompt tokens prefilled (R reused from the cache) ..., D new ...]
  # (The match leaves out the '[': CMake does not split a list inside square brackets.)
  set(turn_regex "turn ([0-9]+): ([0-9]+) prompt tokens prefilled \\(([0-9]+) reused from the cache\\)[^,]*, ([0-9]+) new")
  string(REGEX MATCHALL "${turn_regex}" turns "${run_err}")
  list(LENGTH turns n_turns)
  if(NOT n_turns EQUAL 2)
    message(FATAL_ERROR "${n_turns} turns reported, expected 2")
  endif()
  foreach(i 0 1)
    list(GET turns ${i} line)
    string(REGEX MATCH "${turn_regex}" _ "${line}")
    set(prefilled_${i} ${CMAKE_MATCH_2})
    set(reused_${i} ${CMAKE_MATCH_3})
    set(drawn_${i} ${CMAKE_MATCH_4})
  endforeach()
  # Both turns answered: tokens drawn, and each reply ends with a line break on stdout (a reply may
  # hold line breaks of its own).
  if(drawn_0 LESS 1 OR drawn_1 LESS 1)
    message(FATAL_ERROR "a turn drew no token")
  endif()
  string(REGEX MATCHALL "\n" newlines "${run_out}")
  list(LENGTH newlines n_lines)
  if(n_lines LESS 2)
    message(FATAL_ERROR "stdout holds ${n_lines} line breaks, expected one after each reply")
  endif()
  if(NOT reused_0 EQUAL 0)
    message(FATAL_ERROR "the first turn reused ${reused_0} tokens of an empty cache")
  endif()
  if(MODE STREQUAL "chat")
    # The cache holds the first prompt and every token of the reply but the last: all of it is
    # kept, and the second turn feeds only the last token and the text that follows it.
    math(EXPR want "${prefilled_0} + ${drawn_0} - 1")
    if(NOT reused_1 EQUAL want)
      message(FATAL_ERROR "the second turn reused ${reused_1} cached tokens, expected ${want} (the whole first turn)")
    endif()
    if(NOT prefilled_1 LESS 16)
      message(FATAL_ERROR "the second turn prefilled ${prefilled_1} tokens: more than its message and markers")
    endif()
  else()
    # The first reply was split at </think>, and the second turn renders it without its reasoning:
    # the cache goes back to the end of the first prompt but its <think>, which differs.
    expect_match(run "\\[turn 1: [^]]*, [0-9]+ of them reasoning\\]")
    if(run_err MATCHES "turn 1: [^]]*no </think>")
      message(FATAL_ERROR "the first reply has no </think>: the seed no longer exercises the split")
    endif()
    math(EXPR want "${prefilled_0} - 1")
    if(NOT reused_1 EQUAL want)
      message(FATAL_ERROR "the second turn reused ${reused_1} cached tokens, expected ${want} (the first prompt but its <think>)")
    endif()
  endif()
else()
  message(FATAL_ERROR "examples_test.cmake: unknown MODE '${MODE}'")
endif()
