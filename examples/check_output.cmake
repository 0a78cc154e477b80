# Runs one example as its CTest test: it must exit with 0, and for every line of its source of the
# form `// expect: <regex>`, some line of its standard output must match <regex> (CMake regex
# syntax; ^ and $ anchor to that line).
# Usage: cmake -DEXAMPLE=<program> -DSOURCE=<example.cpp> -P check_output.cmake
cmake_minimum_required(VERSION 3.21)

# Moves the first line of the string in variable `text` into variable `line`. Lines are never
# made a CMake list, where a ';' or '[' in them would split a line or join it to the next.
macro(pop_line text line)
  string(FIND "${${text}}" "\n" eol)
  if(eol EQUAL -1)
    set(${line} "${${text}}")
    set(${text} "")
  else()
    string(SUBSTRING "${${text}}" 0 ${eol} ${line})
    math(EXPR eol "${eol} + 1")
    string(SUBSTRING "${${text}}" ${eol} -1 ${text})
  endif()
endmacro()

execute_process(COMMAND ${EXAMPLE} RESULT_VARIABLE status OUTPUT_VARIABLE output
                ECHO_OUTPUT_VARIABLE)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${EXAMPLE} failed: ${status}")
endif()

file(READ ${SOURCE} source)
set(missing "")
while(NOT source STREQUAL "")
  pop_line(source expect)
  if(NOT expect MATCHES "^// expect: (.*)$")
    continue()
  endif()
  set(regex "${CMAKE_MATCH_1}")
  set(rest "${output}")
  set(found FALSE)
  while(NOT found AND NOT rest STREQUAL "")
    pop_line(rest line)
    if(line MATCHES "${regex}")
      set(found TRUE)
    endif()
  endwhile()
  if(NOT found)
    string(APPEND missing "\n  ${regex}")
  endif()
endwhile()
if(NOT missing STREQUAL "")
  message(FATAL_ERROR "${EXAMPLE}: no line of the output matches${missing}")
endif()
