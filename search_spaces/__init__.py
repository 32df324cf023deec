"""Search spaces, tuner search spaces and found architectures shipped with nni-rspnet (package data; see ``nni_rspnet.resources``)."""
