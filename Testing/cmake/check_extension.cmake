# Evaluates the extension's CMakeLists.txt files against the stand-in macros and
# writes what would be built and installed to MANIFEST (see SlicerStandin.cmake).
#   cmake -DSOURCE_DIR=<repository> -DBINARY_DIR=<scratch folder> -DMANIFEST=<file> -P check_extension.cmake
foreach(var SOURCE_DIR BINARY_DIR MANIFEST)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "pass -D${var}=...")
  endif()
endforeach()
include(${CMAKE_CURRENT_LIST_DIR}/SlicerStandin.cmake)
get_filename_component(SOURCE_DIR ${SOURCE_DIR} ABSOLUTE)
get_filename_component(BINARY_DIR ${BINARY_DIR} ABSOLUTE)
set(CMAKE_SOURCE_DIR ${SOURCE_DIR})
set(CMAKE_CURRENT_SOURCE_DIR ${SOURCE_DIR})
set(CMAKE_BINARY_DIR ${BINARY_DIR})
set(CMAKE_CURRENT_BINARY_DIR ${BINARY_DIR})
set(BUILD_TESTING ON)
file(WRITE ${MANIFEST} "")
include(${SOURCE_DIR}/CMakeLists.txt)
