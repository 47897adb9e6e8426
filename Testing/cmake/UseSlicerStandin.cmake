# TEST-ONLY STAND-IN for Slicer's UseSlicer.cmake: the directory variables an
# extension sees (values as in Slicer's CMake/SlicerDirectories.cmake on Linux).
set(Slicer_USE_PYTHONQT ON)
set(Slicer_LIB_DIR "lib/Slicer-${STANDIN_SLICER_VERSION}")
set(Slicer_QTSCRIPTEDMODULES_SUBDIR "qt-scripted-modules")
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_LIB_DIR}/${Slicer_QTSCRIPTEDMODULES_SUBDIR}")
set(Slicer_INSTALL_ROOT "./")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_INSTALL_ROOT}${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
