# Installation layout and the Debian package (CPack DEB).
#
#   sh etc/build-deb.sh     -> build-deb/tokenaudit_<version>_<arch>.deb
#
# /usr/sbin/tokenauditd, /usr/bin/tokenaudit, /etc/tokenaudit/tokenaudit.conf
# (a conffile: etc/tokenaudit.conf with data_dir /var/lib/tokenaudit),
# /lib/systemd/system/tokenaudit.service, the man pages from man/, the
# alerting rules under /usr/share/tokenaudit. The maintainer scripts in
# cmake/deb/ create the user and the data directory (postinst), stop the
# service on removal (prerm) and delete the data on purge (postrm).
# Depends: the shared libraries the binaries link (dpkg-shlibdeps) and adduser.

include(GNUInstallDirs)

install(TARGETS tokenauditd RUNTIME DESTINATION sbin)
install(TARGETS tokenaudit RUNTIME DESTINATION bin)

# The packaged configuration is the example file with the packaged data_dir.
file(READ ${CMAKE_SOURCE_DIR}/etc/tokenaudit.conf ta_conf)
string(REPLACE "\ndata_dir ./data\n" "\ndata_dir /var/lib/tokenaudit\n" ta_conf_pkg "${ta_conf}")
if(ta_conf_pkg STREQUAL ta_conf)
  message(FATAL_ERROR "etc/tokenaudit.conf: no `data_dir ./data` line to set for the package")
endif()
string(REPLACE "./data/" "/var/lib/tokenaudit/" ta_conf_pkg "${ta_conf_pkg}")
file(WRITE ${CMAKE_BINARY_DIR}/pkg/tokenaudit.conf "${ta_conf_pkg}")
install(FILES ${CMAKE_BINARY_DIR}/pkg/tokenaudit.conf DESTINATION /etc/tokenaudit
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${CMAKE_SOURCE_DIR}/etc/tokenaudit.service DESTINATION /lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/man/tokenaudit.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${CMAKE_SOURCE_DIR}/man/tokenauditd.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${CMAKE_SOURCE_DIR}/etc/tokenaudit-alerts.yml DESTINATION share/tokenaudit)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/OPERATIONS.md
              ${CMAKE_SOURCE_DIR}/docs/CONFIG.md ${CMAKE_SOURCE_DIR}/docs/API.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME tokenaudit)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "tokenaudit maintainers <tokenaudit@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "OpenAI-compatible AI API gateway with quotas and an audit log")
set(CPACK_PACKAGE_INSTALL_DIRECTORY /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, util-linux")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/cmake/deb/postinst ${CMAKE_SOURCE_DIR}/cmake/deb/prerm
    ${CMAKE_SOURCE_DIR}/cmake/deb/postrm ${CMAKE_SOURCE_DIR}/cmake/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
