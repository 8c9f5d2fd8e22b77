# libFuzzer targets, included from CMakeLists.txt when LOOM_FUZZ is ON and the compiler is
# clang (the sanitizer and coverage flags are set there, for every object):
#
#   fuzz/<name>.c -> ${CMAKE_BINARY_DIR}/fuzz/<name>, seed corpus fuzz/corpus/<name>/
#
# `make fuzz` builds them in build-fuzz and runs each for FUZZ_SECS; docs/fuzzing.md.
file(GLOB loom_fuzzers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/fuzz/fuzz_*.c)
set(LOOM_FUZZ_TARGETS "")
foreach(src ${loom_fuzzers})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/fuzz)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_libraries(${name} PRIVATE loom_static)
    loom_warnings(${name})
    list(APPEND LOOM_FUZZ_TARGETS ${name})
endforeach()
add_custom_target(fuzzers DEPENDS ${LOOM_FUZZ_TARGETS})
message(STATUS "loom: fuzz targets: ${LOOM_FUZZ_TARGETS}")
