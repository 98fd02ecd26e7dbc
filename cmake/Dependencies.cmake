# Dependencies come from Debian packages only. A missing one stops configure
# with the name of the package that provides it.

function(octet_missing what package)
  message(FATAL_ERROR
    "Octet needs ${what}, which was not found.\n"
    "Install it with:  sudo apt-get install -y ${package}\n"
    "(or run scripts/setup.sh, which installs every dependency)")
endfunction()

find_package(Threads REQUIRED)

# oneTBB: threads for the core and for the engine.
option(OCTET_ENGINE_NO_TBB "Engine-only builds: run the engine on its own std::thread pool, not oneTBB" OFF)
if(NOT OCTET_ENGINE_NO_TBB)
  find_package(TBB CONFIG QUIET)
endif()
if(OCTET_ENGINE_ONLY AND (OCTET_ENGINE_NO_TBB OR NOT TBB_FOUND))
  # An engine-only build (the Arm cross build) may lack oneTBB, or be asked to
  # do without it: the engine's parallel_for then runs on a fork-join pool of
  # std::threads of its own (engine/parallel.cpp).
  message(STATUS "engine threads: its own std::thread pool, no oneTBB (OCTET_ENGINE_NO_TBB)")
  add_library(TBB::tbb INTERFACE IMPORTED)
  set_target_properties(TBB::tbb PROPERTIES INTERFACE_COMPILE_DEFINITIONS OCTET_ENGINE_NO_TBB)
elseif(OCTET_ENGINE_NO_TBB)
  message(FATAL_ERROR "OCTET_ENGINE_NO_TBB is for engine-only builds (add -DOCTET_ENGINE_ONLY=ON)")
elseif(NOT TBB_FOUND)
  octet_missing("oneTBB (TBB::tbb)" libtbb-dev)
endif()

# doctest: every test suite.
find_package(doctest CONFIG QUIET)
if(NOT doctest_FOUND)
  find_path(OCTET_DOCTEST_INCLUDE doctest/doctest.h)
  if(NOT OCTET_DOCTEST_INCLUDE)
    octet_missing("doctest" doctest-dev)
  endif()
  add_library(doctest::doctest INTERFACE IMPORTED)
  set_target_properties(doctest::doctest PROPERTIES INTERFACE_INCLUDE_DIRECTORIES ${OCTET_DOCTEST_INCLUDE})
endif()

if(NOT OCTET_ENGINE_ONLY)
  # OpenBLAS: sgemm for the float core (cblas interface).
  find_package(OpenBLAS CONFIG QUIET)
  # The paths found are this machine's, so they are build-only: the installed
  # package finds OpenBLAS and stb again (cmake/OctetConfig.cmake.in).
  if(OpenBLAS_FOUND AND EXISTS "${OpenBLAS_INCLUDE_DIRS}/cblas.h")
    add_library(octet_openblas INTERFACE)
    target_include_directories(octet_openblas SYSTEM INTERFACE "$<BUILD_INTERFACE:${OpenBLAS_INCLUDE_DIRS}>")
    target_link_libraries(octet_openblas INTERFACE "$<BUILD_INTERFACE:${OpenBLAS_LIBRARIES}>")
  else()
    find_path(OCTET_CBLAS_INCLUDE cblas.h PATH_SUFFIXES openblas openblas-pthread)
    find_library(OCTET_OPENBLAS_LIB openblas)
    if(NOT OCTET_CBLAS_INCLUDE OR NOT OCTET_OPENBLAS_LIB)
      octet_missing("OpenBLAS (cblas.h, libopenblas)" libopenblas-dev)
    endif()
    add_library(octet_openblas INTERFACE)
    target_include_directories(octet_openblas SYSTEM INTERFACE "$<BUILD_INTERFACE:${OCTET_CBLAS_INCLUDE}>")
    target_link_libraries(octet_openblas INTERFACE "$<BUILD_INTERFACE:${OCTET_OPENBLAS_LIB}>")
  endif()

  # nlohmann/json: the JSON of `octet eval --json` and of the study folders.
  find_package(nlohmann_json 3 CONFIG QUIET)
  if(NOT nlohmann_json_FOUND)
    octet_missing("nlohmann/json" nlohmann-json3-dev)
  endif()

  # MPI (optional): `mpirun -np N octet train` and `octet study`. Without it everything else builds.
  find_package(MPI COMPONENTS CXX QUIET)
  if(MPI_CXX_FOUND)
    message(STATUS "MPI: ${MPI_CXX_LIBRARY_VERSION_STRING}")
  else()
    message(STATUS "MPI: not found (install openmpi-bin libopenmpi-dev for mpirun -np N octet train and octet study)")
  endif()

  # stb_image / stb_image_write: Debian's libstb ships the implementations.
  find_path(OCTET_STB_INCLUDE stb_image.h PATH_SUFFIXES stb)
  find_library(OCTET_STB_LIB stb)
  if(NOT OCTET_STB_INCLUDE OR NOT OCTET_STB_LIB)
    octet_missing("stb_image (stb_image.h, libstb)" libstb-dev)
  endif()
  add_library(octet_stb INTERFACE)
  target_include_directories(octet_stb SYSTEM INTERFACE "$<BUILD_INTERFACE:${OCTET_STB_INCLUDE}>")
  target_link_libraries(octet_stb INTERFACE "$<BUILD_INTERFACE:${OCTET_STB_LIB}>")
endif()

# octet_library(NAME DIR DEPS...): a static library of every .cpp directly in
# DIR (subfolders excluded), include root = the repo root so headers are named
# "core/tensor.h". A folder without sources yet gives an interface library.
# Installed (install(EXPORT), the top-level CMakeLists.txt), the include root
# is <prefix>/include/octet and the warning flags stay behind.
function(octet_library name dir)
  file(GLOB sources CONFIGURE_DEPENDS ${dir}/*.cpp)
  set(include_root $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}> $<INSTALL_INTERFACE:${OCTET_INSTALL_INCLUDEDIR}>)
  if(sources)
    add_library(${name} STATIC ${sources})
    target_include_directories(${name} PUBLIC ${include_root})
    target_link_libraries(${name} PUBLIC ${ARGN} PRIVATE $<BUILD_INTERFACE:octet_flags>)
  else()
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE ${include_root})
    target_link_libraries(${name} INTERFACE ${ARGN})
  endif()
endfunction()

# octet_test(NAME SOURCES... LIBS ...): a doctest executable registered with ctest.
function(octet_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} doctest::doctest octet_flags)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  # OCTET_EMULATOR: how a test starts another program of this build (e.g.
  # octet-run): "" natively, "qemu-aarch64 -L <sysroot> " in a cross build, so
  # the Arm runner really runs under qemu instead of failing to execute.
  string(REPLACE ";" " " emulator "${CMAKE_CROSSCOMPILING_EMULATOR}")
  if(emulator)
    string(APPEND emulator " ")
  endif()
  target_compile_definitions(${name} PRIVATE
    OCTET_SOURCE_DIR="${PROJECT_SOURCE_DIR}" OCTET_BINARY_DIR="${PROJECT_BINARY_DIR}" OCTET_EMULATOR="${emulator}")
  add_test(NAME ${name} COMMAND ${name})
  # A suite that cannot run its subject here exits 77 (tests/skip.h): "Skipped", not "Passed".
  set_tests_properties(${name} PROPERTIES SKIP_RETURN_CODE 77)
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# Every test_*.cpp of the calling folder is one doctest executable (it defines
# DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN itself), registered with ctest as
# <prefix>.<name> and linked with LIBS. A file whose first line is
# "// ctest-labels: slow" gets that label (CI's sanitizer pass skips "slow", and
# "mpi", the suites that run mpirun);
# one labelled "replaces-new" defines the global operator new, which
# ThreadSanitizer's runtime owns, so a -DOCTET_SANITIZE=thread build leaves it
# out. The target names go to <prefix>_TESTS in the caller's scope.
function(octet_test_suite prefix)
  cmake_parse_arguments(S "" "" "LIBS" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/test_*.cpp)
  set(targets "")
  foreach(src ${sources})
    get_filename_component(name ${src} NAME_WE)
    file(STRINGS ${src} first LIMIT_COUNT 1)
    set(labels "")
    if(first MATCHES "ctest-labels: *([a-z,-]+)")
      string(REPLACE "," ";" labels "${CMAKE_MATCH_1}")
    endif()
    if("replaces-new" IN_LIST labels AND OCTET_SANITIZE MATCHES "thread")
      continue()
    endif()
    octet_test(${prefix}.${name} SOURCES ${src} LIBS ${S_LIBS} LABELS "${labels}")
    list(APPEND targets ${prefix}.${name})
  endforeach()
  set(${prefix}_TESTS ${targets} PARENT_SCOPE)
endfunction()

# octet_isa_tests(SUITE COMPONENT ISA...): ctest entries COMPONENT.isa.<ISA>
# that run the kernel suite SUITE with OCTET_TEST_ISA=<ISA>: only that ISA is
# checked, and the entry is "Skipped" (with the reason) on a CPU without it
# (tests/skip.h, isa_selected). So ctest lists every ISA the build ships and
# whether this machine executed it.
function(octet_isa_tests suite component)
  foreach(isa ${ARGN})
    add_test(NAME ${component}.isa.${isa} COMMAND ${suite})
    set_tests_properties(${component}.isa.${isa} PROPERTIES ENVIRONMENT "OCTET_TEST_ISA=${isa}" SKIP_RETURN_CODE 77)
  endforeach()
endfunction()
