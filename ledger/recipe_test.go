package ledger

import (
	"fmt"
	"strings"
	"testing"
)

func TestRecipeValidate(t *testing.T) {
	agg := newActor("aggregator", RoleAggregator).id
	good := func() RoundRecipe {
		return RoundRecipe{Strategy: "fedavgm", Params: map[string]string{"server_momentum": "0.9"}, Clip: 1, NoiseMultiplier: 1.1,
			Compression: "int8", Int8Block: 64, MinTrainers: 2, MaxTrainers: 5, Aggregators: []string{agg}, InitialAdapter: hexDigest("a"), BaseModel: hexDigest("base")}
	}
	if r := good(); r.Validate() != nil {
		t.Fatal(r.Validate())
	}
	pre := good()
	pre.Strategy, pre.Params, pre.Mode, pre.InnerSteps, pre.InitialAdapter = "diloco", map[string]string{"learning_rate": "0.7", "momentum": "0.9"}, RecipePretrain, 50, ""
	pre.InitConfig, pre.InitSeed = hexDigest("tiny.yaml"), 7
	if err := pre.Validate(); err != nil {
		t.Fatalf("pretrain recipe: %v", err)
	}
	cases := map[string]struct {
		edit func(*RoundRecipe)
		want string
	}{
		"no strategy":                  {func(r *RoundRecipe) { r.Strategy = "" }, "recipe.strategy is required"},
		"reserved param":               {func(r *RoundRecipe) { r.Params["clip"] = "1" }, `recipe.params["clip"] is reserved`},
		"non-canonical param":          {func(r *RoundRecipe) { r.Params["server_momentum"] = "0.90" }, "canonical form"},
		"NaN param":                    {func(r *RoundRecipe) { r.Params["x"] = "NaN" }, "not a finite number"},
		"noise without clip":           {func(r *RoundRecipe) { r.Clip = 0 }, "noise_multiplier needs recipe.clip"},
		"negative clip":                {func(r *RoundRecipe) { r.Clip = -1 }, "recipe.clip -1"},
		"no min trainers":              {func(r *RoundRecipe) { r.MinTrainers = 0 }, "recipe.min_trainers 0"},
		"max below min":                {func(r *RoundRecipe) { r.MaxTrainers = 1 }, "recipe.max_trainers 1"},
		"no aggregators":               {func(r *RoundRecipe) { r.Aggregators = nil }, "recipe.aggregators: 0 listed"},
		"aggregator twice":             {func(r *RoundRecipe) { r.Aggregators = []string{agg, agg} }, "listed twice"},
		"aggregator not an ID":         {func(r *RoundRecipe) { r.Aggregators = []string{"bob"} }, "is not a member ID"},
		"bad adapter":                  {func(r *RoundRecipe) { r.InitialAdapter = "xyz" }, "recipe.initial_adapter"},
		"bad base model":               {func(r *RoundRecipe) { r.BaseModel = "ABC" }, "recipe.base_model"},
		"sampled above total":          {func(r *RoundRecipe) { r.SampledTrainers, r.TotalTrainers = 5, 4 }, "sampled_trainers 5"},
		"no compression":               {func(r *RoundRecipe) { r.Compression = "" }, "recipe.compression is required"},
		"control char in params":       {func(r *RoundRecipe) { r.Params["a\x01"] = "1" }, "control character"},
		"unknown mode":                 {func(r *RoundRecipe) { r.Mode = "distill" }, `recipe.mode "distill"`},
		"inner steps without pretrain": {func(r *RoundRecipe) { r.InnerSteps = 50 }, "recipe.inner_steps 50: only a \"pretrain\" recipe"},
		"pretrain without H":           {func(r *RoundRecipe) { r.Mode, r.InitialAdapter = RecipePretrain, "" }, "recipe.inner_steps 0: a pretrain recipe needs 1 to"},
		"pretrain negative H":          {func(r *RoundRecipe) { r.Mode, r.InnerSteps, r.InitialAdapter = RecipePretrain, -5, "" }, "recipe.inner_steps -5"},
		"pretrain with adapter":        {func(r *RoundRecipe) { r.Mode, r.InnerSteps = RecipePretrain, 50 }, "a pretrain recipe trains every weight"},
		"pretrain without init config": {func(r *RoundRecipe) { r.Mode, r.InnerSteps, r.InitialAdapter = RecipePretrain, 50, "" }, "recipe.init_config: a pretrain recipe names the model config"},
		"pretrain init config not a digest": {func(r *RoundRecipe) {
			r.Mode, r.InnerSteps, r.InitialAdapter, r.InitConfig = RecipePretrain, 50, "", "tiny.yaml"
		}, "recipe.init_config"},
		"init config without pretrain": {func(r *RoundRecipe) { r.InitConfig, r.InitSeed = hexDigest("c"), 3 }, `only a "pretrain" recipe initialises its model`},
		"init seed without pretrain":   {func(r *RoundRecipe) { r.InitSeed = 3 }, `init_seed 3: only a "pretrain" recipe`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			r := good()
			tc.edit(&r)
			err := r.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			// And DecodeTx refuses a JobRegistered carrying it.
			if _, err := SignTx(newActor("coordinator", RoleCoordinator).key, testChain, 1, JobRegistered{JobID: "j", Recipe: r}); err == nil {
				t.Fatal("SignTx accepted an invalid recipe")
			}
		})
	}
}

func TestRecipeCommitParams(t *testing.T) {
	r := RoundRecipe{Strategy: "fedadam", Params: map[string]string{"eta": "0.01"}, Clip: 1.5, NoiseMultiplier: 0.8}
	want := map[string]string{"eta": "0.01", "clip": "1.5", "noise_multiplier": "0.8"}
	if got := r.CommitParams(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("CommitParams %v, want %v", got, want)
	}
	ok := map[string]string{"eta": "0.01", "clip": "1.5", "noise_multiplier": "0.8", ParamServerState: hexDigest("s")}
	if err := r.CheckCommitParams(ok); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit func(map[string]string)
		want string
	}{
		"changed":        {func(p map[string]string) { p["eta"] = "0.1" }, `params["eta"] is "0.1", the job's recipe says "0.01"`},
		"missing":        {func(p map[string]string) { delete(p, "noise_multiplier") }, `params["noise_multiplier"] is missing`},
		"extra":          {func(p map[string]string) { p["noise_seed"] = "42" }, `params["noise_seed"] is not in the job's recipe`},
		"bad state":      {func(p map[string]string) { p[ParamServerState] = "x" }, "params[server_state]"},
		"same, reformed": {func(p map[string]string) { p["clip"] = "1.50" }, `params["clip"] is "1.50"`},
	} {
		p := map[string]string{}
		for k, v := range ok {
			p[k] = v
		}
		tc.edit(p)
		if err := r.CheckCommitParams(p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}
