"""nnictl experiment configs shipped with nni-rspnet (package data; see ``nni_rspnet.resources``)."""
