# Starts or stops the redis-server the shared_budget example runs against, on 127.0.0.1:PORT,
# in DIR (its pid file and log), saving nothing to disk.
# Usage: cmake -DACTION=start|stop -DSERVER=<redis-server> -DPORT=<port> -DDIR=<dir> -P redis_fixture.cmake
cmake_minimum_required(VERSION 3.21)
if(ACTION STREQUAL "start")
  file(MAKE_DIRECTORY ${DIR})
  execute_process(COMMAND ${SERVER} --port ${PORT} --bind 127.0.0.1 --daemonize yes --save ""
                          --appendonly no --dir ${DIR} --pidfile ${DIR}/redis.pid
                          --logfile ${DIR}/redis.log
                  RESULT_VARIABLE status)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "redis-server did not start: ${status}")
  endif()
  # Daemonized, it may not listen yet: wait (up to 10 s) until its pid file exists.
  foreach(attempt RANGE 100)
    if(EXISTS ${DIR}/redis.pid)
      execute_process(COMMAND ${CMAKE_COMMAND} -E sleep 0.1) # the pid file comes just before listen
      return()
    endif()
    execute_process(COMMAND ${CMAKE_COMMAND} -E sleep 0.1)
  endforeach()
  message(FATAL_ERROR "redis-server wrote no pid file in 10 s")
elseif(ACTION STREQUAL "stop")
  if(EXISTS ${DIR}/redis.pid)
    file(READ ${DIR}/redis.pid pid)
    string(STRIP "${pid}" pid)
    execute_process(COMMAND kill ${pid})
    file(REMOVE ${DIR}/redis.pid)
  endif()
endif()
