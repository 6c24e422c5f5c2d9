# kiln_add_plugin(<name> SOURCES <src>... [LIBRARIES <lib>...] [OUTPUT_DIRECTORY <dir>])
#
# Builds a Kiln plugin: a MODULE library named kiln-<name>.so (kiln loads only files named
# kiln-*.so from its plugin folders) that links the SDK headers only. Point a manifest's
# `[plugins] paths` or KILN_PLUGIN_PATH at OUTPUT_DIRECTORY (default: the current binary dir).
#
#   find_package(Kiln CONFIG REQUIRED)
#   kiln_add_plugin(max-colours SOURCES max_colours.cpp)
function(kiln_add_plugin name)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "_BUILTIN" "OUTPUT_DIRECTORY" "SOURCES;LIBRARIES")
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "kiln_add_plugin(${name}): SOURCES is required")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE Kiln::sdk ${ARG_LIBRARIES})
  target_compile_features(${name} PRIVATE cxx_std_17)
  set_target_properties(${name} PROPERTIES
    PREFIX ""
    OUTPUT_NAME "kiln-${name}"
    # Only kiln_plugin_entry is exported: no symbol clashes between plugins or with the host.
    C_VISIBILITY_PRESET hidden
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  # An unresolved symbol is a link error here, not a load error on a user's machine. (Not in
  # Kiln's own sanitized trees: there the sanitizer runtime is in the executable, not linked
  # into each module.)
  if(NOT KILN_SANITIZE AND NOT KILN_FUZZ)
    target_link_options(${name} PRIVATE -Wl,-z,defs)
  endif()
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${ARG_OUTPUT_DIRECTORY}")
  endif()
  if(ARG__BUILTIN)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY "${KILN_PLUGIN_BUILD_DIR}")
    install(TARGETS ${name} LIBRARY DESTINATION ${KILN_PLUGIN_INSTALL_DIR})
    set_property(GLOBAL APPEND PROPERTY KILN_BUILTIN_PLUGIN_TARGETS ${name})
    kiln_set_warnings(${name})
  endif()
endfunction()
