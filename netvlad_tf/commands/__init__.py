"""One module per `netvlad-tf` command: `SUMMARY`, `EXAMPLE`, `define_flags(fv)`, `run(fv)`."""
