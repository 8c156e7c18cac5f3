//! The run-state plan of a request: the rows and the attention maps the run state holds
//! (state::Plan), grown or reallocated before a pass that needs more, checked first against the
//! load's memory budget.

use crate::error::{Result, TfError};
use crate::model::backend::Backend;
use crate::model::forward::Model;
use crate::model::memory;
use crate::model::state::{MapLayers, Plan, RunState};

impl<B: Backend> Model<B> {
    /// Makes the run state hold a pass reaching position `end` whose attention is `area` = Tq x Tk
    /// cells at most, keeping the maps of `maps` (and no others): the context grows to `end` when
    /// it holds fewer rows, the maps are reallocated when another set of layers or a larger area
    /// is asked for (see [`Model::replan`]).
    pub fn plan_for(&mut self, b: &B, end: usize, area: usize, maps: &MapLayers) -> Result<()> {
        maps.check(self.cfg.num_layers)?;
        let cur = &self.state.plan;
        if cur.holds(end, area, maps) {
            return Ok(());
        }
        let area = if *maps == cur.maps { cur.map_area.max(area) } else { area };
        let plan = Plan::new(&self.cfg, cur.context.max(end), maps.clone(), area);
        self.replan(b, plan)
    }

    /// Reallocates the run state for `plan` where it differs: a new context reallocates everything
    /// (the K/V caches and the encoder's keys are lost: callers re-run from position 0), other maps
    /// or another area the maps alone. Checked first against the load's budget, with the weights
    /// (memory::demand_for): over it, one line naming the request, the total and the biggest
    /// buffers, and the state is left as it was.
    pub fn replan(&mut self, b: &B, plan: Plan) -> Result<()> {
        plan.maps.check(self.cfg.num_layers)?;
        if plan == self.state.plan {
            return Ok(());
        }
        let budget = self.state.budget;
        memory::demand_for(&self.cfg, b.weight_copies(), &plan).check(&budget).map_err(|e| {
            let kept = match &plan.maps {
                MapLayers::All => "every layer's".to_string(),
                MapLayers::None => "no".to_string(),
                MapLayers::Only(v) => format!("{} layers'", v.len()),
            };
            TfError::Memory(format!("a context of {} tokens with {kept} attention maps: {e}", plan.context))
        })?;
        if plan.context != self.state.plan.context {
            // the old state is freed before the new one is allocated
            self.state = RunState::new(b, &self.cfg, &Plan::new(&self.cfg, 1, MapLayers::None, 1))?;
            self.state.budget = budget;
            self.state = RunState::new(b, &self.cfg, &plan)?;
            self.state.budget = budget;
            Ok(())
        } else {
            self.state.set_maps(b, &self.cfg, plan.maps, plan.map_area)
        }
    }

    /// [`Model::plan_for`] a pass from position 0 over `t` tokens (and an encoded source of `src`).
    pub fn plan_pass(&mut self, b: &B, src: Option<usize>, t: usize, maps: &MapLayers) -> Result<()> {
        let ts = src.unwrap_or(0);
        let area = (t * t).max(ts * ts).max(t * ts);
        self.plan_for(b, t.max(ts), area, maps)
    }
}
