/* Entry point of the server; the master helper replaces this body. */
int ta_master_main(int argc, char **argv);
int main(int argc, char **argv) { return ta_master_main(argc, argv); }
