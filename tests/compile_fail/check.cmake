# Compiles SOURCE twice: as it is (must succeed, so the test cannot pass by accident) and with
# SAFEGUARDS_COMPILE_FAIL defined (must fail with a diagnostic matching the regex written on the
# source's first line as `// expect: <regex>`).
file(STRINGS ${SOURCE} first_line LIMIT_COUNT 1)
string(REGEX REPLACE "^// expect: " "" expected "${first_line}")
set(common -std=c++20 -fsyntax-only -I${INCLUDE_DIR} ${SOURCE})
execute_process(COMMAND ${COMPILER} ${common} RESULT_VARIABLE ok_result ERROR_VARIABLE ok_errors)
if(NOT ok_result EQUAL 0)
  message(FATAL_ERROR "${SOURCE} does not compile even without SAFEGUARDS_COMPILE_FAIL:\n${ok_errors}")
endif()
execute_process(COMMAND ${COMPILER} -DSAFEGUARDS_COMPILE_FAIL ${common} RESULT_VARIABLE bad_result
                ERROR_VARIABLE bad_errors)
if(bad_result EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled with SAFEGUARDS_COMPILE_FAIL; it must not")
endif()
if(NOT bad_errors MATCHES "${expected}")
  message(FATAL_ERROR "${SOURCE} failed for another reason than /${expected}/:\n${bad_errors}")
endif()
message(STATUS "${SOURCE}: rejected as expected")
