# The two entry points of the README. Both create the venv and install everything themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= demo_out
# `make model`: the recipe of the shipped FER2013 model (docs/model_card_fer2013_vgg.md); resumable.
FER2013 ?= ../shared/data/fer2013
MODEL_WORK ?= model_work

# `make model-ferplus`: the recipe of the default model, ferwild:ferplus_vgg (MODEL_CARD.md): recipes/ferplus.yaml,
# then recipes/ferplus_occlusion.yaml from its best checkpoint; resumable.
FERPLUS ?= ../shared/data/ferplus
WILD_DEV ?= ../shared/data/wild_dev

.PHONY: install demo test bench model model-ferplus model-ferplus-ensemble model-ferplus-live study-ferplus clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip takes these from the machine's local wheels (no CUDA download).
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/ferwild demo --out $(OUT)

test: install
	$(PY) -m pytest -q

model: install
	$(VENV)/bin/ferwild prepare $(FER2013) --out $(MODEL_WORK)/fer2013_basic7 --labels basic7 --balance none
	$(VENV)/bin/ferwild train recipes/fer2013.yaml --data $(MODEL_WORK)/fer2013_basic7 --out $(MODEL_WORK)/runs/fer2013 --resume
	$(PY) recipes/ship_fer2013.py --run $(MODEL_WORK)/runs/fer2013 --data $(MODEL_WORK)/fer2013_basic7 --work $(MODEL_WORK)/eval

model-ferplus: install
	$(VENV)/bin/ferwild prepare $(FERPLUS) --out $(MODEL_WORK)/ferplus_basic7 --balance none
	$(VENV)/bin/ferwild train recipes/ferplus.yaml --data $(MODEL_WORK)/ferplus_basic7 --out $(MODEL_WORK)/runs/ferplus --resume
	$(VENV)/bin/ferwild prepare $(FER2013) --out $(MODEL_WORK)/fer2013_basic7 --labels basic7 --balance none
	$(VENV)/bin/ferwild prepare $(WILD_DEV)/labels.csv --out $(MODEL_WORK)/wild_dev_like_ferplus --like $(MODEL_WORK)/ferplus_basic7 \
		--balance none --fallback drop --split-ratios 0.5,0.25,0.25
	$(VENV)/bin/ferwild train recipes/ferplus_occlusion.yaml --data $(MODEL_WORK)/ferplus_basic7 --out $(MODEL_WORK)/runs/ferplus_occlusion \
		--pretrained $(MODEL_WORK)/runs/ferplus/checkpoints/$$(cat $(MODEL_WORK)/runs/ferplus/checkpoints/BEST)/model.safetensors --resume
	$(PY) recipes/ship_ferplus.py --run $(MODEL_WORK)/runs/ferplus_occlusion --base $(MODEL_WORK)/runs/ferplus --data $(MODEL_WORK)/ferplus_basic7 \
		--fer2013 $(MODEL_WORK)/fer2013_basic7 --wild $(MODEL_WORK)/wild_dev_like_ferplus --work $(MODEL_WORK)/eval_ferplus \
		--peer docs/bench/wild_peers_fer_mtcnn.json

# `make model-ferplus-ensemble`: the accurate model ferwild:ferplus_ensemble (docs/model_card_ferplus_ensemble.md): the
# default plus a fer_vgg trained on its own over 30 epochs (recipes/ferplus_long.yaml, about 75 min on 2 idle cores), read together
# with precise BN; resumable.
model-ferplus-ensemble: install
	$(VENV)/bin/ferwild prepare $(FERPLUS) --out $(MODEL_WORK)/ferplus_basic7 --balance none
	$(VENV)/bin/ferwild train recipes/ferplus_long.yaml --data $(MODEL_WORK)/ferplus_basic7 \
		--out $(MODEL_WORK)/runs/ferplus_long --resume
	$(VENV)/bin/ferwild prepare $(FER2013) --out $(MODEL_WORK)/fer2013_basic7 --labels basic7 --balance none
	$(VENV)/bin/ferwild prepare $(WILD_DEV)/labels.csv --out $(MODEL_WORK)/wild_dev_like_ferplus --like $(MODEL_WORK)/ferplus_basic7 \
		--balance none --fallback drop --split-ratios 0.5,0.25,0.25
	$(PY) recipes/ship_ferplus_models.py ensemble --members ferwild:ferplus_vgg $(MODEL_WORK)/runs/ferplus_long --precise-bn \
		--data $(MODEL_WORK)/ferplus_basic7 --fer2013 $(MODEL_WORK)/fer2013_basic7 --wild $(MODEL_WORK)/wild_dev_like_ferplus \
		--work $(MODEL_WORK)/eval_ferplus_models

# `make model-ferplus-live`: the live model, ferwild:ferplus_live (docs/model_card_ferplus_live.md): the default's
# network with its BatchNorm statistics re-estimated on clean faces (precise BN), read once per face, run in int8.
model-ferplus-live: install
	$(VENV)/bin/ferwild prepare $(FERPLUS) --out $(MODEL_WORK)/ferplus_basic7 --balance none
	$(PY) -c "from ferwild.precise_bn import precise_bn_run; \
		precise_bn_run('ferwild:ferplus_vgg', '$(MODEL_WORK)/ferplus_basic7', '$(MODEL_WORK)/runs/ferplus_precise_bn')"
	$(VENV)/bin/ferwild prepare $(FER2013) --out $(MODEL_WORK)/fer2013_basic7 --labels basic7 --balance none
	$(VENV)/bin/ferwild prepare $(WILD_DEV)/labels.csv --out $(MODEL_WORK)/wild_dev_like_ferplus --like $(MODEL_WORK)/ferplus_basic7 \
		--balance none --fallback drop --split-ratios 0.5,0.25,0.25
	$(PY) recipes/ship_ferplus_models.py live --run $(MODEL_WORK)/runs/ferplus_precise_bn --data $(MODEL_WORK)/ferplus_basic7 \
		--fer2013 $(MODEL_WORK)/fer2013_basic7 --wild $(MODEL_WORK)/wild_dev_like_ferplus --work $(MODEL_WORK)/eval_ferplus_models

# `make study-ferplus`: the study's Tasks 1-3 on FER+ and what its protocol gets wrong
# (docs/real-study.md); about 1.5 hours on 2 CPU cores, resumable.
study-ferplus: install
	$(VENV)/bin/ferwild prepare $(FERPLUS) --out $(MODEL_WORK)/ferplus_basic7 --balance none
	$(VENV)/bin/ferwild study recipes/study_ferplus.yaml --data $(MODEL_WORK)/ferplus_basic7 \
		--out $(MODEL_WORK)/study_ferplus --workers 2
	$(VENV)/bin/ferwild prepare $(WILD_DEV)/labels.csv --out $(MODEL_WORK)/wild_dev_like_ferplus --like $(MODEL_WORK)/ferplus_basic7 \
		--balance none --fallback drop --split-ratios 0.5,0.25,0.25
	$(PY) analyses/leakage_wild_dev.py --data $(MODEL_WORK)/wild_dev_like_ferplus --work $(MODEL_WORK)/leakage_wild_dev
	$(VENV)/bin/ferwild prepare $(FER2013) --out $(MODEL_WORK)/fer2013_basic7 --labels basic7 --balance none
	$(PY) analyses/real_study_analysis.py --study $(MODEL_WORK)/study_ferplus --out $(MODEL_WORK)/real_study \
		--fer2013 $(MODEL_WORK)/fer2013_basic7
	# docs/real-study.md renders its figures from these two files (tools/render_doc_figures.py)
	cp $(MODEL_WORK)/real_study/analysis.json docs/bench/real_study_analysis.json
	cp $(MODEL_WORK)/leakage_wild_dev/leakage.json docs/bench/leakage_wild_dev.json
	$(PY) tools/render_doc_figures.py

bench: install
	$(PY) bench/bench_prepare.py

clean:
	rm -rf $(OUT) .pytest_cache
