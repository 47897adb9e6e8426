# TEST-ONLY STAND-IN for the parts of CMake's project mode and of Slicer's and
# CTK's CMake macros that the extension's CMakeLists.txt files call, so that
# they can be evaluated with `cmake -P` where no Slicer build tree exists.
# Written for this project from the signatures and behaviour of
# slicerMacroBuildScriptedModule (Slicer, CMake/SlicerMacroBuildScriptedModule.cmake)
# and ctkMacroCompilePythonScript (CTK, CMake/ctkMacroCompilePythonScript.cmake):
# same arguments, same checks on missing files (CTK's macro only fails at build time,
# with "No rule to make target"; the stand-in fails at once), same build/install
# paths. Instead of creating copy targets, each file is written to MANIFEST as
#   file<TAB>source path<TAB>path in the extension's install tree
# together with the extension metadata, modules and tests.
#
# Input variables: SOURCE_DIR (top of the extension source tree), BINARY_DIR,
# MANIFEST (output file), STANDIN_SLICER_VERSION (default 5.8).

set(_STANDIN_DIR ${CMAKE_CURRENT_LIST_DIR})
if(NOT DEFINED STANDIN_SLICER_VERSION)
  set(STANDIN_SLICER_VERSION 5.8)
endif()

function(_standin_record kind)
  string(REPLACE ";" "\t" line "${kind};${ARGN}")
  file(APPEND "${MANIFEST}" "${line}\n")
endfunction()

# --- CMake project-mode commands that are not available with -P ---

macro(project name)
  set(PROJECT_NAME ${name})
  set(PROJECT_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  set(PROJECT_BINARY_DIR ${CMAKE_CURRENT_BINARY_DIR})
  set(${name}_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  _standin_record(project ${name})
endmacro()

macro(find_package name)
  if(NOT "${name}" STREQUAL "Slicer")
    message(FATAL_ERROR "stand-in: find_package(${name}) is not modelled")
  endif()
  set(Slicer_FOUND TRUE)
  set(Slicer_USE_FILE ${_STANDIN_DIR}/UseSlicerStandin.cmake)
  set(Slicer_EXTENSION_GENERATE_CONFIG ${_STANDIN_DIR}/ExtensionGenerateConfigStandin.cmake)
  set(Slicer_EXTENSION_CPACK ${_STANDIN_DIR}/ExtensionCPackStandin.cmake)
endmacro()

macro(add_subdirectory dir)
  list(APPEND _standin_dirs "${CMAKE_CURRENT_SOURCE_DIR}|${CMAKE_CURRENT_BINARY_DIR}")
  get_filename_component(CMAKE_CURRENT_SOURCE_DIR ${dir} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  get_filename_component(CMAKE_CURRENT_BINARY_DIR ${dir} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_BINARY_DIR})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/CMakeLists.txt)
    message(FATAL_ERROR "add_subdirectory given source \"${dir}\" which is not an existing directory with a CMakeLists.txt")
  endif()
  include(${CMAKE_CURRENT_SOURCE_DIR}/CMakeLists.txt)
  list(POP_BACK _standin_dirs _standin_dir)
  string(REPLACE "|" ";" _standin_dir "${_standin_dir}")
  list(GET _standin_dir 0 CMAKE_CURRENT_SOURCE_DIR)
  list(GET _standin_dir 1 CMAKE_CURRENT_BINARY_DIR)
endmacro()

# install(FILES ... DESTINATION ... [COMPONENT ...]): each file recorded with its install path (the
# missing-file check CMake makes at install time is made here at once); other forms are not modelled.
function(install)
  cmake_parse_arguments(MY "" "DESTINATION;COMPONENT" "FILES" ${ARGN})
  if(NOT MY_FILES OR NOT DEFINED MY_DESTINATION OR MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "stand-in: install(${ARGN}) is not modelled; add it to Testing/cmake/SlicerStandin.cmake")
  endif()
  foreach(file ${MY_FILES})
    get_filename_component(src ${file} ABSOLUTE BASE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
    if(NOT EXISTS ${src})
      message(FATAL_ERROR "stand-in: install(FILES) given the nonexistent file '${src}'")
    endif()
    get_filename_component(name ${src} NAME)
    get_filename_component(installed ${MY_DESTINATION}/${name} ABSOLUTE BASE_DIR /)
    string(REGEX REPLACE "^/" "" installed "${installed}")
    _standin_record(file install ${src} ${installed})
  endforeach()
endfunction()

# --- Slicer / CTK macros ---

# Same arguments as CTK's (a missing file, which breaks CTK's copy step at build
# time, is a configure-time error here): SCRIPTS get ".py" appended when their
# extension is not py; relative paths are taken from SOURCE_DIR (default: the
# current source folder) and copied to DESTINATION_DIR/<path as given>; the
# whole DESTINATION_DIR is installed into INSTALL_DIR (its contents only with
# NO_INSTALL_SUBDIR). Absolute paths land at their path relative to the current
# binary folder, as in CTK.
function(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET"
    "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  foreach(varname TARGET_NAME SCRIPTS DESTINATION_DIR INSTALL_DIR)
    if(NOT DEFINED MY_${varname})
      message(FATAL_ERROR "${varname} is mandatory")
    endif()
  endforeach()
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "stand-in: unknown arguments to ctkMacroCompilePythonScript: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT DEFINED MY_SOURCE_DIR)
    set(MY_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  get_filename_component(destination ${MY_DESTINATION_DIR} ABSOLUTE)
  if(MY_NO_INSTALL_SUBDIR)
    set(install_root ${MY_INSTALL_DIR})
  else()
    get_filename_component(last ${destination} NAME)
    set(install_root ${MY_INSTALL_DIR}/${last})
  endif()
  foreach(kind SCRIPTS RESOURCES)
    foreach(file ${MY_${kind}})
      if(kind STREQUAL "SCRIPTS")
        get_filename_component(ext ${file} EXT)
        if(NOT "${ext}" MATCHES "py")
          set(file "${file}.py")
        endif()
      endif()
      if(IS_ABSOLUTE ${file})
        set(src ${file})
        file(RELATIVE_PATH tgt_file ${CMAKE_CURRENT_BINARY_DIR} ${file})
      else()
        set(src ${MY_SOURCE_DIR}/${file})
        set(tgt_file ${file})
      endif()
      if(NOT EXISTS ${src})
        message(FATAL_ERROR "stand-in: ${MY_TARGET_NAME} would copy the nonexistent file '${src}'")
      endif()
      get_filename_component(tgt ${destination}/${tgt_file} ABSOLUTE)
      file(RELATIVE_PATH in_destination ${destination} ${tgt})
      if(in_destination MATCHES "^\\.\\./")
        set(installed "NOT-INSTALLED:${tgt}")
      else()
        get_filename_component(installed ${install_root}/${in_destination} ABSOLUTE BASE_DIR /)
        string(REGEX REPLACE "^/" "" installed "${installed}")
      endif()
      _standin_record(file ${MY_TARGET_NAME} ${src} ${installed})
    endforeach()
  endforeach()
endfunction()

# Same arguments and checks as Slicer's; then the same CTK call, with the
# module's folder as source and qt-scripted-modules as destination.
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  foreach(var SCRIPTS RESOURCES)
    foreach(value ${MY_SLICER_${var}})
      if(IS_ABSOLUTE ${value})
        set(value_absolute ${value})
      else()
        set(value_absolute ${CMAKE_CURRENT_SOURCE_DIR}/${value})
      endif()
      if(NOT EXISTS ${value_absolute} AND NOT EXISTS ${value_absolute}.py)
        message(FATAL_ERROR "slicerMacroBuildScriptedModule(${var}) given nonexistent file or directory '${value}'")
      endif()
    endforeach()
  endforeach()
  if(NOT Slicer_USE_PYTHONQT)
    message(FATAL_ERROR "Attempting to build the Python scripted module '${MY_SLICER_NAME}' when Slicer_USE_PYTHONQT is OFF")
  endif()
  set(_standin_subdir "")
  set(_standin_no_subdir NO_INSTALL_SUBDIR)
  if(MY_SLICER_WITH_SUBDIR)
    get_filename_component(_standin_subdir ${CMAKE_CURRENT_SOURCE_DIR} NAME)
    set(_standin_subdir "/${_standin_subdir}")
    set(_standin_no_subdir "")
  endif()
  _standin_record(module ${MY_SLICER_NAME} ${CMAKE_CURRENT_SOURCE_DIR})
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}${_standin_subdir}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    ${_standin_no_subdir}
    )
endmacro()

function(slicer_add_python_unittest)
  cmake_parse_arguments(MY "" "SCRIPT;TESTNAME_PREFIX" "SLICER_ARGS" ${ARGN})
  if(NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
    message(FATAL_ERROR "stand-in: slicer_add_python_unittest given nonexistent script '${MY_SCRIPT}'")
  endif()
  _standin_record(test ${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT})
endfunction()
