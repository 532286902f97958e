# Fuzz targets (tests/fuzz/fuzz_<t>.c), two ways:
#  - always: fuzz_<t>_replay = the target + tests/fuzz/replay.c, a plain program
#    that replays tests/fuzz/corpus/<t>/; ctest runs it as fuzz_replay_<t>;
#  - with -DRC_FUZZ=ON (clang only): fuzz_<t> linked with libFuzzer. Then the
#    whole build is instrumented for coverage + ASan + UBSan, so use a build
#    directory of its own (bench/fuzz.sh does).
set(RC_FUZZ_TARGETS event api model clicklog checkpoint recall state)
set(RC_FUZZ_DIR ${CMAKE_SOURCE_DIR}/tests/fuzz)

foreach(t ${RC_FUZZ_TARGETS})
  add_executable(fuzz_${t}_replay ${RC_FUZZ_DIR}/fuzz_${t}.c ${RC_FUZZ_DIR}/memfile.c ${RC_FUZZ_DIR}/seeded.c
                 ${RC_FUZZ_DIR}/replay.c)
  target_compile_options(fuzz_${t}_replay PRIVATE ${RC_WARN})
  target_link_libraries(fuzz_${t}_replay PRIVATE recalld_core)
  set_target_properties(fuzz_${t}_replay PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  add_test(NAME fuzz_replay_${t} COMMAND fuzz_${t}_replay ${RC_FUZZ_DIR}/corpus/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 120)
  if(RC_FUZZ)
    add_executable(fuzz_${t} ${RC_FUZZ_DIR}/fuzz_${t}.c ${RC_FUZZ_DIR}/memfile.c ${RC_FUZZ_DIR}/seeded.c)
    target_compile_options(fuzz_${t} PRIVATE ${RC_WARN})
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(fuzz_${t} PRIVATE recalld_core)
    set_target_properties(fuzz_${t} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  endif()
endforeach()
