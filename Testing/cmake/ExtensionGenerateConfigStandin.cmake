# TEST-ONLY STAND-IN for Slicer's extension description generation: records the
# metadata the Extensions Index needs and fails when one is missing.
foreach(key HOMEPAGE CATEGORY CONTRIBUTORS DESCRIPTION ICONURL SCREENSHOTURLS DEPENDS)
  if("${EXTENSION_${key}}" STREQUAL "")
    message(FATAL_ERROR "EXTENSION_${key} is not set")
  endif()
  _standin_record(meta ${key} "${EXTENSION_${key}}")
endforeach()
