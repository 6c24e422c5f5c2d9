# The example's downstream step: copies one baked image into game_data/ and logs that it ran
# (the tests read the log to see which steps re-ran).
cmake_path(GET DESTINATION PARENT_PATH folder)
file(MAKE_DIRECTORY "${folder}")
file(COPY_FILE "${SOURCE}" "${DESTINATION}")
file(APPEND "${LOG}" "${DESTINATION}\n")
