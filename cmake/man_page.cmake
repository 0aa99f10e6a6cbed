# cmake -DRELAY=path -DHELP2MAN=path -DOUT=file.1.gz -P man_page.cmake: outbox-relay(1)
# from `outbox-relay --help`, with every subcommand's --help as a section (help2man
# --include), gzip-compressed as Debian installs man pages.
execute_process(COMMAND ${RELAY} --help OUTPUT_VARIABLE general RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "outbox-relay --help failed")
endif()
string(REGEX MATCHALL "\n  [a-z-]+ " lines "${general}")
set(include "[COMMANDS]\n")
foreach(line IN LISTS lines)
  string(STRIP "${line}" cmd)
  execute_process(COMMAND ${RELAY} ${cmd} --help OUTPUT_VARIABLE text)
  # roff: a leading dot or quote would be a request; backslashes are escapes.
  string(REPLACE "\\" "\\\\" text "${text}")
  string(REGEX REPLACE "\n([.'])" "\n\\\\&\\1" text "${text}")
  string(APPEND include ".SS ${cmd}\n.nf\n${text}.fi\n")
endforeach()
string(REGEX REPLACE "\\.gz$" "" page "${OUT}")
file(WRITE ${page}.include "${include}")
execute_process(
  COMMAND ${HELP2MAN} --no-info --no-discard-stderr --locale=C.UTF-8 --section=1 --include=${page}.include
          "--name=transactional outbox relay from PostgreSQL to Kafka" --output=${page} ${RELAY}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "help2man failed")
endif()
get_filename_component(dir ${page} DIRECTORY)
get_filename_component(name ${page} NAME)
execute_process(COMMAND gzip -9 -n -f ${name} WORKING_DIRECTORY ${dir} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gzip failed")
endif()
