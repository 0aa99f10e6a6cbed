# Debian packages (CPack DEB), built by ops/package.sh:
#   outbox-relay      the daemon, its systemd units (with /usr/bin paths), the example
#                     configuration as the conffile /etc/outbox-relay/relay.conf, the
#                     migrations, the man page (help2man, from --help), and a postinst that
#                     creates the system user outbox-relay.
#   outbox-relay-dev  headers, the client libraries and the CMake package config for
#                     find_package(outbox).
# Dependencies are computed from the binaries (dpkg-shlibdeps), the version is the
# project's. Install components: `relay` and `dev` (set as the default component around
# add_subdirectory in the top-level CMakeLists.txt).

# Where the package puts its files (relative install destinations land below it,
# whatever CMAKE_INSTALL_PREFIX a developer's build has).
set(OUTBOX_PACKAGE_PREFIX /usr CACHE STRING "Installation prefix of the Debian packages")

# The units as the package installs them: the source tree's, with the packaged binary
# path. Only in the package (component install), like the conffile below.
foreach(unit outbox-relay.service outbox-relay@.service)
  file(READ ${PROJECT_SOURCE_DIR}/ops/${unit} text)
  string(REPLACE "/usr/local/bin/outbox-relay" "${OUTBOX_PACKAGE_PREFIX}/${CMAKE_INSTALL_BINDIR}/outbox-relay" text
         "${text}")
  string(REPLACE "file:///usr/local/share/doc/outbox-relay/"
         "file://${OUTBOX_PACKAGE_PREFIX}/${CMAKE_INSTALL_DATAROOTDIR}/doc/outbox-relay/" text "${text}")
  file(WRITE ${PROJECT_BINARY_DIR}/packaging/${unit} "${text}")
  install(FILES ${PROJECT_BINARY_DIR}/packaging/${unit} DESTINATION /lib/systemd/system COMPONENT relay
          EXCLUDE_FROM_ALL)
endforeach()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/ops/outbox-relay.service ${PROJECT_SOURCE_DIR}/ops/outbox-relay@.service)

# Absolute: a conffile lives in /etc whatever the prefix. Only in the package (the
# component's own install): `cmake --install build --prefix DIR` must not write to /etc.
install(FILES ${PROJECT_SOURCE_DIR}/ops/relay.conf.example DESTINATION /etc/outbox-relay RENAME relay.conf
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ COMPONENT relay EXCLUDE_FROM_ALL)
install(FILES ${PROJECT_SOURCE_DIR}/docs/relay.md ${PROJECT_SOURCE_DIR}/docs/security.md
              ${PROJECT_SOURCE_DIR}/docs/operations.md ${PROJECT_SOURCE_DIR}/README.md
              ${PROJECT_SOURCE_DIR}/ops/grafana/outbox-relay.json ${PROJECT_SOURCE_DIR}/ops/prometheus/alerts.yml
        DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/outbox-relay COMPONENT relay)

# outbox-relay.1 from `outbox-relay --help` and every subcommand's --help (help2man,
# Debian package help2man; ops/install-deps.sh installs it).
find_program(OUTBOX_HELP2MAN help2man)
if(OUTBOX_HELP2MAN)
  set(man ${PROJECT_BINARY_DIR}/packaging/outbox-relay.1.gz)
  add_custom_command(
    OUTPUT ${man}
    COMMAND ${CMAKE_COMMAND} -DRELAY=$<TARGET_FILE:outbox-relay> -DHELP2MAN=${OUTBOX_HELP2MAN} -DOUT=${man}
            -P ${PROJECT_SOURCE_DIR}/cmake/man_page.cmake
    DEPENDS outbox-relay ${PROJECT_SOURCE_DIR}/cmake/man_page.cmake
    COMMENT "Generating outbox-relay.1 (help2man)"
    VERBATIM)
  add_custom_target(outbox-relay-man ALL DEPENDS ${man})
  install(FILES ${man} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT relay)
else()
  message(STATUS "help2man not found: no man page (ops/install-deps.sh installs it; ops/package.sh needs it)")
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME outbox-relay)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "outbox-relay maintainers <outbox-relay@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX ${OUTBOX_PACKAGE_PREFIX})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL relay dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_RELAY_PACKAGE_NAME outbox-relay)
set(CPACK_DEBIAN_RELAY_PACKAGE_DEPENDS "adduser")
# The first line of each description is its synopsis (no CPACK_PACKAGE_DESCRIPTION_SUMMARY:
# CPack would put it before both).
set(CPACK_COMPONENT_RELAY_DESCRIPTION
  "transactional outbox relay from PostgreSQL to Kafka\nPublishes rows written with outbox.publish() inside business transactions to Kafka, in per-key order, with half messages (check-back), dead letters, notifications, metrics and the `doctor` command.")
set(CPACK_DEBIAN_RELAY_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/ops/debian/postinst ${PROJECT_SOURCE_DIR}/ops/debian/postrm ${PROJECT_SOURCE_DIR}/ops/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME outbox-relay-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
# The static libraries carry no run-time dependencies of their own; a user's build needs
# the headers of what outboxConfig.cmake finds again.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libpqxx-dev, librdkafka-dev, libpq-dev, nlohmann-json3-dev, pkg-config")
set(CPACK_COMPONENT_DEV_DESCRIPTION
  "outbox-relay client libraries (development files)\nHeaders, static libraries outbox::producer and outbox::consumer, and the CMake package config for find_package(outbox).")
include(CPack)
