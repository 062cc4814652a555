/* Entry point of the command-line tool (init, ledger dump, ...). */
int ta_cli_main(int argc, char **argv);
int main(int argc, char **argv) { return ta_cli_main(argc, argv); }
