# libFuzzer targets, included from CMakeLists.txt when LOOM_FUZZ is ON and the compiler is
# clang (the sanitizer and coverage flags are set there, for every object):
#
#   fuzz/<name>.c -> ${CMAKE_BINARY_DIR}/fuzz/<name>, seed corpus fuzz/corpus/<name>/
#   ctest test fuzz/<name>: fuzz/run.sh runs it for $FUZZ_SECS (60) seconds
#
# `make fuzz` builds them in build-fuzz and runs the tests two at a time; `make test` does
# the same first. The Lua targets (lua_fuzz.h) read their driver, fuzz/<name>.lua, from the
# source tree. docs/fuzzing.md.
file(GLOB loom_fuzzers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fuzz/fuzz_*.c)
find_program(LOOM_BASH bash REQUIRED)
enable_testing()
set(LOOM_FUZZ_TARGETS "")
foreach(src ${loom_fuzzers})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    target_include_directories(${name} PRIVATE ${LOOM_INCLUDE_DIRS} ${CMAKE_SOURCE_DIR}/fuzz)
    target_compile_definitions(${name} PRIVATE LOOM_FUZZ_DIR="${CMAKE_SOURCE_DIR}/fuzz")
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE loom_static)
    loom_warnings(${name})
    list(APPEND LOOM_FUZZ_TARGETS ${name})
    add_test(NAME fuzz/${name}
        COMMAND ${LOOM_BASH} ${CMAKE_SOURCE_DIR}/fuzz/run.sh $<TARGET_FILE:${name}> ${name}
                ${CMAKE_BINARY_DIR})
    set_tests_properties(fuzz/${name} PROPERTIES LABELS fuzz)
endforeach()
add_custom_target(fuzzers DEPENDS ${LOOM_FUZZ_TARGETS})
message(STATUS "loom: fuzz targets: ${LOOM_FUZZ_TARGETS}")
