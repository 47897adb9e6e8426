# TEST-ONLY STAND-IN for Slicer's extension packaging: records that it is included last.
_standin_record(cpack ${PROJECT_NAME})
