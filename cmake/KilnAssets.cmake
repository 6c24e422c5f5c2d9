# kiln_add_assets(<target> MANIFEST <file> [OUTPUT_DIR <dir>] [JOBS <n>] [REPORT <file>]
#                 [BACKEND <name>] [NOT_ALL])
#
# Bakes a manifest's assets as part of the build, the way CMake's own generators work (AUTOMOC,
# policy CMP0058): one custom command whose OUTPUT is a stamp file and whose BYPRODUCTS are the
# asset files, so other rules can depend on the assets themselves:
#
#   find_package(Kiln CONFIG REQUIRED)
#   kiln_add_assets(game_art MANIFEST assets.toml OUTPUT_DIR ${CMAKE_BINARY_DIR}/art)
#   add_custom_command(OUTPUT sheet.png DEPENDS ${CMAKE_BINARY_DIR}/art/icons/sword.png ...)
#
# - The asset list comes from `kiln outputs` at configure time; the manifest is a configure
#   dependency, so adding or removing an asset re-configures.
# - The command depends on the manifest, the kiln executable and the plugins; Kiln writes a
#   depfile naming the plugin files it actually loaded.
# - Kiln rewrites an asset file only when its bytes change and refreshes the stamp on success.
#   Ninja's `restat` (CMake sets it on custom commands) then skips every rule downstream of an
#   unchanged asset, and a failed run leaves the stamp old, so the next build runs Kiln again.
# - USES_TERMINAL: Kiln runs in Ninja's console pool, so its progress is shown live. The
#   trade-off: the console pool runs one job at a time and Ninja's own status line waits while
#   Kiln prints; other rules keep building in parallel.
# - Kiln's state for this build tree goes to <binary dir>/<target>.kiln-state (kiln build's
#   --state-dir); `kiln.lock`, the committed record, is written beside the manifest.
# - OUTPUT_DIR overrides the manifest's output_dir (relative to the current binary dir); JOBS,
#   REPORT and BACKEND are kiln build's -j, --report and --backend (e.g. `BACKEND placeholder`
#   in CI). The target is part of `all` unless NOT_ALL is given.
#
# kiln_link_assets(<consumer> <art target>)
#
# Declares that <consumer>, a custom target whose rules read the art (copy, pack, cook), needs
# it. Its rules may then DEPEND on the asset files themselves under every generator: Ninja
# knows every rule of the build, Unix Makefiles only the rules of the target being made, so the
# art target must be made first. Only for data steps: linking art to an executable or library
# would make every one of its object files wait for the art, so that is refused with the
# pattern to use instead.
#
# kiln_install_assets(<art target> DESTINATION <dir> [COMPONENT <component>])
#
# Installs exactly the declared outputs of <art target> below <dir>, keeping their folders
# (icons/sword.png -> <dir>/icons/sword.png); CPack packs what it installs.

# The module works the same whatever the calling project's cmake_minimum_required: functions
# keep the policies in effect where they are defined. CMP0116 above all: Ninja then reads
# Kiln's depfile relative to the build tree (OLD, in projects below 3.20, made Ninja re-run
# Kiln at every build: "expected depfile to mention ..., got /abs/...").
cmake_policy(PUSH)
cmake_policy(VERSION 3.25)

function(kiln_add_assets target)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "NOT_ALL" "MANIFEST;OUTPUT_DIR;JOBS;REPORT;BACKEND" "")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kiln_add_assets(${target}): unknown arguments ${ARG_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT ARG_MANIFEST)
    message(FATAL_ERROR "kiln_add_assets(${target}): MANIFEST is required")
  endif()
  cmake_path(ABSOLUTE_PATH ARG_MANIFEST BASE_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}"
             NORMALIZE OUTPUT_VARIABLE manifest)
  if(NOT EXISTS "${manifest}")
    message(FATAL_ERROR "kiln_add_assets(${target}): manifest '${manifest}' does not exist")
  endif()

  # Every variable tested below starts empty here: a function sees its caller's variables, and
  # a game's own `output_dir` must not become this target's.
  set(output_dir "")
  set(imported FALSE)
  set(reconfigure "")

  # The kiln to run: Kiln's own target inside its tree, else the installed package's.
  if(TARGET kiln)
    get_target_property(imported kiln IMPORTED)
  endif()
  if(TARGET kiln AND NOT imported)
    set(kiln_command "$<TARGET_FILE:kiln>")
    set(kiln_dependency kiln)
    set(kiln_now "${KILN_EXECUTABLE_IN_TREE}")
    get_property(plugin_deps GLOBAL PROPERTY KILN_BUILTIN_PLUGIN_TARGETS)
  elseif(TARGET Kiln::kiln)
    get_target_property(kiln_now Kiln::kiln LOCATION)
    set(kiln_command "${kiln_now}")
    set(kiln_dependency "${kiln_now}")
    file(GLOB plugin_deps "${KILN_PLUGIN_DIR}/kiln-*.so")
  else()
    message(FATAL_ERROR "kiln_add_assets(${target}): no kiln executable; find_package(Kiln) first")
  endif()

  set(options -m "${manifest}")
  if(ARG_OUTPUT_DIR)
    cmake_path(ABSOLUTE_PATH ARG_OUTPUT_DIR BASE_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}"
               NORMALIZE OUTPUT_VARIABLE output_dir)
    list(APPEND options --output-dir "${output_dir}")
  endif()

  # Adding or removing an asset changes the byproducts: re-configure when the manifest changes.
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${manifest}")
  set(byproducts "")
  set(reconfigure "")
  if(EXISTS "${kiln_now}")
    execute_process(COMMAND "${kiln_now}" outputs ${options}
                    OUTPUT_VARIABLE listing ERROR_VARIABLE problem RESULT_VARIABLE status)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "kiln_add_assets(${target}):\n${problem}")
    endif()
    string(REGEX REPLACE "\n$" "" listing "${listing}")
    string(REPLACE "\n" ";" byproducts "${listing}")
  else()
    # Inside Kiln's tree before kiln is built, the asset files cannot be listed yet. The first
    # run touches a configure dependency, so the next build re-configures and lists them.
    set(marker "${CMAKE_CURRENT_BINARY_DIR}/${target}.kiln-reconfigure")
    file(TOUCH "${marker}")
    set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${marker}")
    set(reconfigure COMMAND "${CMAKE_COMMAND}" -E touch "${marker}")
  endif()

  set(run_options "")
  if(ARG_JOBS)
    list(APPEND run_options -j "${ARG_JOBS}")
  endif()
  if(ARG_REPORT)
    cmake_path(ABSOLUTE_PATH ARG_REPORT BASE_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}"
               NORMALIZE OUTPUT_VARIABLE report)
    list(APPEND run_options --report "${report}")
  endif()
  if(ARG_BACKEND)
    list(APPEND run_options --backend "${ARG_BACKEND}")
  endif()

  # Kiln's own record of this build tree (stamps, journal, build lock, scratch files) lives in
  # the build tree, never in the output folder: the output folder holds only shippable art.
  list(APPEND run_options --state-dir "${CMAKE_CURRENT_BINARY_DIR}/${target}.kiln-state")

  set(stamp "${CMAKE_CURRENT_BINARY_DIR}/${target}.kiln-stamp")
  set(depfile "${CMAKE_CURRENT_BINARY_DIR}/${target}.kiln.d")
  add_custom_command(
    OUTPUT "${stamp}"
    BYPRODUCTS ${byproducts}
    COMMAND "${kiln_command}" build ${options} ${run_options} --stamp "${stamp}"
            --depfile "${depfile}"
    ${reconfigure}
    DEPENDS "${manifest}" ${kiln_dependency} ${plugin_deps}
    DEPFILE "${depfile}"
    WORKING_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}"
    COMMENT "Baking the assets of ${ARG_MANIFEST}"
    USES_TERMINAL
    VERBATIM)
  if(ARG_NOT_ALL)
    add_custom_target(${target} DEPENDS "${stamp}")
  else()
    add_custom_target(${target} ALL DEPENDS "${stamp}")
  endif()
  if(NOT output_dir)
    # The manifest's output_dir: the common parent of the listed outputs is not enough (one
    # asset), so Kiln's own answer is used.
    execute_process(COMMAND "${kiln_now}" outputs ${options} --folder
                    OUTPUT_VARIABLE output_dir OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE status ERROR_QUIET)
    if(NOT status EQUAL 0)
      set(output_dir "")
    endif()
  endif()
  # Two targets baking into one folder would both claim its files (Ninja: "multiple rules
  # generate"): said here, with both names.
  if(output_dir)
    get_property(taken GLOBAL PROPERTY "KILN_OUTPUT_DIR_OWNER ${output_dir}")
    if(taken)
      message(FATAL_ERROR "kiln_add_assets(${target}): ${taken} already bakes into "
                          "'${output_dir}'; give each its own OUTPUT_DIR")
    endif()
    set_property(GLOBAL PROPERTY "KILN_OUTPUT_DIR_OWNER ${output_dir}" "${target}")
  endif()
  set_target_properties(${target} PROPERTIES KILN_OUTPUTS "${byproducts}"
    KILN_OUTPUT_DIR "${output_dir}" KILN_STAMP "${stamp}")
endfunction()

function(kiln_link_assets consumer art)
  set(call "kiln_link_assets(${consumer} ${art})")
  if(ARGN)
    message(FATAL_ERROR "${call}: unexpected arguments '${ARGN}' (one consumer, one art target)")
  endif()
  foreach(name IN ITEMS "${consumer}" "${art}")
    if(NOT TARGET "${name}")
      message(FATAL_ERROR "${call}: '${name}' is not a target")
    endif()
  endforeach()
  get_target_property(outputs "${art}" KILN_OUTPUTS)
  if(outputs STREQUAL "outputs-NOTFOUND")
    message(FATAL_ERROR "${call}: ${art} is not a kiln_add_assets() target")
  endif()
  get_target_property(outputs "${consumer}" KILN_OUTPUTS)
  if(NOT outputs STREQUAL "outputs-NOTFOUND")
    message(FATAL_ERROR "${call}: ${consumer} is itself an art target; the first argument is "
                        "the data step that reads the art")
  endif()
  get_target_property(type "${consumer}" TYPE)
  if(NOT type STREQUAL "UTILITY")
    string(TOLOWER "${type}" kind)
    string(REPLACE "_" " " kind "${kind}")
    message(FATAL_ERROR
      "${call}: ${consumer} is code (${kind}); the art would hold up every one of its object "
      "files. Link the art to the data step that reads it instead "
      "(kiln_link_assets(game_data ${art}), where game_data is an add_custom_target() whose "
      "rules copy or pack the asset files), and let what needs both (a run or package target) "
      "depend on both.")
  endif()
  add_dependencies("${consumer}" "${art}")
endfunction()

function(kiln_install_assets art)
  cmake_parse_arguments(PARSE_ARGV 1 ARG "" "DESTINATION;COMPONENT" "")
  set(usage "kiln_install_assets(<art target> DESTINATION <dir> [COMPONENT <component>])")
  if(ARG_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "kiln_install_assets(${art}): unexpected arguments "
                        "'${ARG_UNPARSED_ARGUMENTS}'; usage: ${usage}")
  endif()
  if(NOT ARG_DESTINATION)
    message(FATAL_ERROR "kiln_install_assets(${art}): DESTINATION is required; usage: ${usage}")
  endif()
  if(NOT TARGET "${art}")
    message(FATAL_ERROR "kiln_install_assets(${art}): '${art}' is not a target")
  endif()
  get_target_property(outputs "${art}" KILN_OUTPUTS)
  get_target_property(root "${art}" KILN_OUTPUT_DIR)
  if(outputs STREQUAL "outputs-NOTFOUND" OR NOT root)
    message(FATAL_ERROR "kiln_install_assets(${art}): not a kiln_add_assets() target")
  endif()
  set(component "")
  if(ARG_COMPONENT)
    set(component COMPONENT "${ARG_COMPONENT}")
  endif()
  foreach(file IN LISTS outputs)
    cmake_path(RELATIVE_PATH file BASE_DIRECTORY "${root}" OUTPUT_VARIABLE relative)
    cmake_path(GET relative PARENT_PATH folder)
    set(destination "${ARG_DESTINATION}")
    if(folder)
      string(APPEND destination "/${folder}")
    endif()
    install(FILES "${file}" DESTINATION "${destination}" ${component})
  endforeach()
endfunction()

cmake_policy(POP)
